"""Named weights, offline: baking them from a local server (hash checked), resolving them, fine-tuning from them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

from trainkit import weights
from trainkit.data.demo import DemoDataset
from trainkit.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TRAINKIT = Path(sys.executable).with_name("trainkit")
COCO = "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1"


def state_dict_bytes(seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save({"layer.weight": torch.rand(4, 3), "layer.bias": torch.rand(4)}, buffer)
    return buffer.getvalue()


def fake_named(monkeypatch: pytest.MonkeyPatch, body: bytes) -> weights.NamedWeights:
    """Named weights whose published file is `body` (torchvision's names carry real files' hashes)."""
    prefix = hashlib.sha256(body).hexdigest()[:8]
    named = weights.NamedWeights("Fake_Weights.V1", f"https://download.pytorch.org/models/fake-{prefix}.pth")
    monkeypatch.setattr(weights, "named_weights", lambda name: named)
    return named


def test_download_from_the_url_override_checks_the_hash(weights_server, monkeypatch, tmp_path: Path) -> None:
    body = state_dict_bytes()
    named = fake_named(monkeypatch, body)
    weights_server.files = {named.file_name: body}
    path = weights.download("Fake_Weights.V1", tmp_path / "cache")
    assert path == tmp_path / "cache" / named.file_name and path.read_bytes() == body
    assert weights.download("Fake_Weights.V1", tmp_path / "cache") == path  # present: nothing fetched again


def test_an_interrupted_download_leaves_nothing(weights_server, monkeypatch, tmp_path: Path) -> None:
    body = state_dict_bytes()
    named = fake_named(monkeypatch, body)
    weights_server.files, weights_server.cut = {named.file_name: body}, {named.file_name}
    # The connection closes cleanly after half the bytes: the hash check is what notices.
    with pytest.raises(UserError, match=r"Fake_Weights.V1: http://127.0.0.1:\d+/models/fake-\w+.pth invalid hash"):
        weights.download("Fake_Weights.V1", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_hash_mismatch_exits_2_and_keeps_nothing(weights_server, run_cli, tmp_path: Path) -> None:
    # torchvision's real name and file name, served with other bytes: their sha256 cannot match.
    named = weights.named_weights("MobileNet_V3_Small_Weights.IMAGENET1K_V1")
    weights_server.files = {named.file_name: state_dict_bytes()}
    result = run_cli("weights", "download", named.name, "--dir", tmp_path / "cache")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "invalid hash value" in lines[0] and "nothing was kept" in lines[0], result.err
    assert list((tmp_path / "cache").iterdir()) == []


def test_unknown_names_are_refused_before_anything_is_fetched(run_cli, tmp_path: Path) -> None:
    result = run_cli("weights", "download", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", "Nope.V1", "--dir", tmp_path)
    assert result.code == 2 and "unknown weights 'Nope.V1'" in result.err and not any(tmp_path.iterdir())


def test_list_says_what_the_cache_holds(run_cli, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    named = weights.named_weights(COCO)
    named.path().parent.mkdir(parents=True)
    named.path().write_bytes(b"x")
    result = run_cli("weights", "list", "--present")
    # which arch starts from it by default
    detector = "  (detector arch=fasterrcnn_mobilenet_v3_large_fpn: its weights=coco)"
    assert result.code == 0 and result.out.splitlines()[1:] == [f"present  {COCO}{detector}"]
    everything = run_cli("weights", "list").out
    assert "-        MobileNet_V3_Large_Weights.IMAGENET1K_V1" in everything


def test_missing_named_weights_say_how_to_bake_them(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as info:
        weights.require_present(f"torchvision:{COCO}")
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth") in message
    assert f"trainkit weights download {COCO}" in message
    with pytest.raises(UserError, match=r"no file or folder 'nowhere\.pth'"):
        weights.require_present("nowhere.pth")
    with pytest.raises(UserError, match="holds no readable trainkit checkpoint"):
        weights.load_state_dict(str(tmp_path))


def test_load_matching_reports_what_it_kept(caplog) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    donor = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 5))  # another class count
    with caplog.at_level("INFO", logger="trainkit.weights"):
        kept = weights.load_matching(model, donor.state_dict(), "donor.pth")
    assert kept == ["1.weight", "1.bias"] and torch.equal(model[0].weight, donor[0].weight)
    assert "loaded 2 of the model's 4 tensors" in caplog.text and "initialised afresh" in caplog.text
    with pytest.raises(UserError, match="none of its 1 tensors fits this model"):
        weights.load_matching(model, {"other": torch.zeros(1)}, "other.pth")


@pytest.mark.slow
def test_detector_fine_tunes_from_named_weights_and_continues_from_its_run(demo: DemoDataset, tmp_path: Path) -> None:
    # A stand-in for torchvision's COCO file, under its real name in a private cache: what `weights download`
    # leaves there (torchvision reads a cached file without checking its hash again).
    home = tmp_path / "torch"
    named = weights.named_weights(COCO)
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    coco = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=91)
    torch.save(coco.state_dict(), home / "hub" / "checkpoints" / named.file_name)
    env = {**os.environ, "TORCH_HOME": str(home), "MLFLOW_TRACKING_URI": "", "TRAINKIT_TRAINER": ""}

    def train(out: Path, weights_spec: str | None) -> subprocess.CompletedProcess:
        command = [
            str(TRAINKIT), "train", "--trainer", str(ROOT / "trainers" / "detector"),
            "--imageset", str(demo.imageset_studio), "--labelset", str(demo.labels_csv), "--output-dir", str(out),
            "--device", "cpu", "--set", "max_steps=2", "--set", "batch_size=2", "--set", "image_size=96",
        ]  # fmt: skip
        if weights_spec is not None:
            command += ["--set", f"weights={weights_spec}"]
        return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)

    first = train(tmp_path / "first", None)  # COCO is the detector's default
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((tmp_path / "first" / "run.json").read_text())["parameters"]
    assert report["trainable"] < report["total"] and "backbone.body.0" in report["frozen_modules"]
    assert re.search(r"parameters: [\d.]+M, [\d.]+M train; frozen: backbone.body.0, ", first.stderr)
    trained = torch.load(tmp_path / "first" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    # The backbone's first layers were frozen (trainable_backbone_layers=3): they still hold the file's values.
    stem = "backbone.body.0.0.weight"
    assert torch.equal(trained["model"][stem], coco.state_dict()[stem])
    assert trained["model"]["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4  # 3 classes + background

    second = train(tmp_path / "second", str(tmp_path / "first"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"weights {tmp_path / 'first'}: loaded" in second.stderr

    missing = train(tmp_path / "third", "torchvision:FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1")
    assert missing.returncode == 2
    assert "trainkit weights download FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1" in missing.stderr.splitlines()[-1]
    assert "or --set weights= to start from scratch" in missing.stderr.splitlines()[-1]


def test_parameter_count_names_the_frozen_modules() -> None:
    from trainkit.training.parameters import count_parameters

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))
    assert count_parameters(model).describe() == "parameters: 0.00M, 0.00M train (all)"
    for p in model[1].parameters():
        p.requires_grad_(False)
    count = count_parameters(model)
    assert (count.total, count.trainable, count.frozen_modules) == (36, 16, ("1",))  # not "1.0" as well
    assert count.describe().endswith("; frozen: 1")


def test_a_file_named_the_torch_hub_way_downloads_by_url(weights_server, tmp_path: Path) -> None:
    body = state_dict_bytes(3)
    name = f"team-detector-{hashlib.sha256(body).hexdigest()[:10]}.pth"
    weights_server.files = {name: body}
    # The URL is fetched as given: the mirror setting ($TRAINKIT_WEIGHTS_URL) is for torchvision's files.
    url = os.environ[weights.ENV_WEIGHTS_URL].replace("/models/", f"/elsewhere/{name}")
    assert weights.download(url, tmp_path).read_bytes() == body
    with pytest.raises(UserError, match=r"must end in -<sha256 prefix>\.pth"):
        weights.download(url.replace(name, "team-detector.pth"), tmp_path)


def test_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    result = subprocess.run(["bash", "-o", "pipefail", "-c", f"{TRAINKIT} weights list | head -1"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and result.stdout.startswith("cache: ") and not result.stderr, result.stderr


def test_an_mlflow_model_folder_gives_its_state_dict(tmp_path: Path) -> None:
    import mlflow.pytorch

    model = torch.nn.Linear(3, 2)
    mlflow.pytorch.save_model(model, str(tmp_path / "model"), serialization_format="pickle")
    state = weights.load_state_dict(str(tmp_path / "model"))
    assert torch.equal(state["weight"], model.weight)
