"""The hf_detector trainer: transformers' detectors fine-tuned offline.

Tiny randomly initialised checkpoints of each family (tests/hf_tiny.py) stand in for the Hub's; a
localhost server stands in for the Hub (or a mirror, HF_ENDPOINT) when a test bakes one.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from hf_tiny import FAMILIES, tiny_checkpoint
from trained import assert_same_answer, built_model_dir, sample_images

from trainkit.batch import DetectionBatch
from trainkit.classmap import ClassMap
from trainkit.data.demo import DemoDataset
from trainkit.errors import UserError
from trainkit.params import parse_params
from trainkit.training.discovery import load_trainer

ROOT = Path(__file__).resolve().parents[1]
HF_DETECTOR = ROOT / "trainers" / "hf_detector"
TRAINKIT = Path(sys.executable).with_name("trainkit")
CLASSES = ClassMap(("circle", "square", "triangle"))
SIZE = 64
# At 64 px RT-DETR and D-FINE have 84 anchors (strides 8, 16, 32): with as many queries, the encoder's
# top-k keeps all of them, and with room for every query x class the post-processing's top-k keeps
# every answer. An untrained model's near-equal scores then reorder the answers between runtimes but
# never change which they are: a comparison without regard to order compares every one.
QUERIES, LIMIT = 84, 300


@pytest.fixture(scope="module")
def trainer():
    return load_trainer(str(HF_DETECTOR)).trainer


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: tiny_checkpoint(family, root / family, queries=QUERIES) for family in FAMILIES}


def _params(trainer, weights: Path | str, **more):
    return parse_params(trainer.Params, {"weights": str(weights), "image_size": SIZE, "detections_per_image": LIMIT,
                                         **more})  # fmt: skip


def _batch() -> tuple[torch.Tensor, DetectionBatch]:
    """Two images in 0..1: one with two objects, one with none."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, SIZE, SIZE)
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [34.0, 20.0, 60.0, 58.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    return images, DetectionBatch(images, targets, torch.arange(2), torch.ones(2, 2))


def _answers(boxes, labels, scores) -> list[tuple]:
    return sorted(zip(labels.tolist(), scores.round(decimals=5).tolist(), boxes.round(decimals=3).tolist(),
                      strict=True))  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_fine_tunes_and_predicts_as_transformers_post_processes(family, trainer, checkpoints) -> None:
    from transformers import AutoImageProcessor

    model = trainer.build_model(_params(trainer, checkpoints[family]), CLASSES)
    assert model.model.config.num_labels == len(CLASSES) and model.model.config.id2label[2] == "triangle"
    images, batch = _batch()
    losses = trainer.loss(model.train(), images, batch)
    assert math.isfinite(losses["loss"].item()) and {"loss", "loss_bbox", "loss_giou"} <= set(losses)
    losses["loss"].backward()
    heads = [p for name, p in model.named_parameters() if "class" in name and p.grad is not None]
    assert heads and any(p.grad.abs().sum() > 0 for p in heads)
    model.eval()
    with torch.no_grad():
        ours = trainer.predict(model, images, batch)
        raw = model.model(pixel_values=images * model.gain - model.offset)
    # The checkpoint's own post-processing, every score kept, is what the model answers (best first; RT-DETR's
    # keeps as many as it has queries, the model as many as detections_per_image says).
    processor = AutoImageProcessor.from_pretrained(checkpoints[family])
    reference = processor.post_process_object_detection(raw, threshold=0.0, target_sizes=[(SIZE, SIZE)] * 2)
    for mine, theirs in zip(ours, reference, strict=True):
        n = len(theirs["scores"])
        assert len(mine["scores"]) >= n and (mine["scores"][:-1] >= mine["scores"][1:]).all()
        assert _answers(mine["boxes"][:n], mine["labels"][:n], mine["scores"][:n]) == _answers(
            theirs["boxes"], theirs["labels"], theirs["scores"]
        )


def test_the_checkpoints_normalisation_is_applied_inside_the_model(trainer, checkpoints) -> None:
    detr = trainer.build_model(_params(trainer, checkpoints["detr"]), CLASSES)  # ImageNet mean and std
    rt_detr = trainer.build_model(_params(trainer, checkpoints["rt_detr"]), CLASSES)  # 0..1, no mean or std
    images = torch.rand(1, 3, 8, 8)
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    assert torch.allclose(images * detr.gain - detr.offset, (images - mean) / std, atol=1e-5)
    assert torch.allclose(images * rt_detr.gain - rt_detr.offset, images)
    assert trainer.mean == (0.0, 0.0, 0.0) and trainer.std == (1.0, 1.0, 1.0)  # the harness hands it 0..1


def test_a_checkpoint_that_does_not_fit_is_one_line(trainer, checkpoints, tmp_path: Path) -> None:
    # rt_detr's config over a D-FINE model's tensors: not the class layers alone mismatch.
    mixed = shutil.copytree(checkpoints["rt_detr"], tmp_path / "mixed")
    shutil.copy(checkpoints["d_fine"] / "model.safetensors", mixed / "model.safetensors")
    with pytest.raises(UserError, match=r"does not fit its config's architecture \(\d+ tensors, e\.g\. "):
        trainer.build_model(_params(trainer, mixed), CLASSES)
    other = shutil.copytree(checkpoints["detr"], tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "owlvit"}))
    with pytest.raises(UserError, match="holds a 'owlvit' model; this trainer fine-tunes rt_detr, rt_detr_v2"):
        trainer.build_model(_params(trainer, other), CLASSES)
    with pytest.raises(UserError, match=r"'hf:nobody' is not hf:ORG/NAME@REVISION"):
        _params(trainer, "hf:nobody")


def test_no_weights_builds_the_arch_from_scratch_with_as_many_queries_as_anchors(trainer) -> None:
    model = trainer.build_model(parse_params(trainer.Params, {"weights": "", "image_size": SIZE}), CLASSES)
    assert model.model.config.model_type == "rt_detr" and model.model.config.num_queries == QUERIES
    images, batch = _batch()
    assert math.isfinite(trainer.loss(model.train(), images, batch)["loss"].item())
    with pytest.raises(UserError, match="hyperparameter 'arch' must be one of rt_detr, rt_detr_v2, d_fine"):
        parse_params(trainer.Params, {"weights": "", "arch": "detr"})


def test_a_hub_checkpoint_not_baked_names_the_command(trainer, monkeypatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    params = _params(trainer, "hf:team/tiny-rtdetr@main")
    with pytest.raises(UserError) as caught:
        trainer.build_model(params, CLASSES)
    message = str(caught.value)
    assert "hf:team/tiny-rtdetr@main is not in the Hugging Face cache" in message
    assert "bake it first with `trainkit weights download hf:team/tiny-rtdetr@main`" in message


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_export_answers_as_torch_does_for_every_detection(family, checkpoints, tmp_path: Path) -> None:
    from trainkit.inference.onnx_export import export_onnx
    from trainkit.inference.onnx_predictor import OnnxPredictor
    from trainkit.inference.predictor import load_predictor

    overrides = {"weights": str(checkpoints[family]), "image_size": SIZE, "detections_per_image": LIMIT}
    predictor = load_predictor(built_model_dir(HF_DETECTOR, tmp_path / "model", overrides, CLASSES))
    exported = OnnxPredictor(export_onnx(predictor, tmp_path / "model.onnx"))
    images = sample_images(predictor.trainer, SIZE)
    for batch in (images[:1], images):
        expected, got = predictor.predict(batch, 0.0), exported.predict(batch, 0.0)
        for one, other in zip(expected, got, strict=True):
            assert len(one.scores) == len(other.scores) > 0
            assert assert_same_answer(one, other, cut=-1.0) == 2 * len(one.scores)  # every one, both ways


class _Hub(http.server.BaseHTTPRequestHandler):
    """The Hub's file endpoint, /ORG/NAME/resolve/REVISION/FILE, for one repository at one commit."""

    files: ClassVar[dict[str, bytes]] = {}
    repo: ClassVar[str] = ""
    commit: ClassVar[str] = ""

    def _file(self) -> bytes | None:
        prefix = f"/{self.repo}/resolve/"
        if not self.path.startswith(prefix):
            return None
        revision, _, name = self.path[len(prefix) :].partition("/")
        return self.files.get(name) if revision in ("main", self.commit) else None

    def _headers(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("X-Repo-Commit", self.commit)
        self.end_headers()

    def do_HEAD(self) -> None:
        body = self._file()
        if body is None:
            self.send_error(404)
        else:
            self._headers(body)

    def do_GET(self) -> None:
        body = self._file()
        if body is None:
            self.send_error(404)
            return
        self._headers(body)
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub(checkpoints) -> Iterator[type[_Hub]]:
    files = {p.name: p.read_bytes() for p in checkpoints["rt_detr"].iterdir()}
    handler = type("Hub", (_Hub,), {"files": files, "repo": "team/tiny-rtdetr", "commit": "a1" * 20})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    handler.endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRAINKIT_"))}
    return {**env, "HF_HOME": str(tmp_path / "hf"), "MLFLOW_TRACKING_URI": "", **more}


def test_weights_download_bakes_a_hub_checkpoint_read_offline_after(hub, tmp_path: Path) -> None:
    spec = f"hf:{hub.repo}@main"
    baked = subprocess.run([str(TRAINKIT), "weights", "download", spec], capture_output=True, text=True,
                           timeout=120, env=_env(tmp_path, HF_ENDPOINT=hub.endpoint))  # fmt: skip
    assert baked.returncode == 0, baked.stderr
    assert f"{spec} commit {hub.commit}" in baked.stdout.splitlines()  # what to pin it to
    for name, body in hub.files.items():
        assert f"{spec} {name} sha256:{hashlib.sha256(body).hexdigest()}" in baked.stdout.splitlines()
    # The record the publish manifest copies: `weights list --json`, with no huggingface_hub import needed.
    listed = subprocess.run([str(TRAINKIT), "weights", "list", "--present", "--json"], capture_output=True, text=True,
                            timeout=120, env=_env(tmp_path))  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    digests = {name: hashlib.sha256(body).hexdigest() for name, body in hub.files.items()}
    assert json.loads(listed.stdout)["hf"] == {spec: {"commit": hub.commit, "sha256": digests}}
    # Offline, with no server to ask: the cache alone answers, at the branch it was baked from and its commit.
    code = "import sys; from trainkit.hf_weights import resolve_hub; print(resolve_hub(sys.argv[1]))"
    for name in (spec, f"hf:{hub.repo}@{hub.commit}"):
        read = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, timeout=120,
                              env=_env(tmp_path, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9"))  # fmt: skip
        assert read.returncode == 0, read.stderr
        assert (Path(read.stdout.strip()) / "model.safetensors").read_bytes() == hub.files["model.safetensors"]
    missing = subprocess.run([str(TRAINKIT), "weights", "download", f"hf:{hub.repo}-x@main"], capture_output=True,
                             text=True, timeout=120, env=_env(tmp_path, HF_ENDPOINT=hub.endpoint))  # fmt: skip
    assert missing.returncode == 2 and f"hf:{hub.repo}-x@main: cannot download config.json" in missing.stderr


@pytest.mark.slow
def test_a_baked_checkpoint_trains_on_the_demo_data_offline_and_continues(
    hub, demo: DemoDataset, tmp_path: Path
) -> None:
    spec = f"hf:{hub.repo}@main"
    env = _env(tmp_path, HF_ENDPOINT=hub.endpoint)
    baked = subprocess.run([str(TRAINKIT), "weights", "download", spec], capture_output=True, text=True, env=env)
    assert baked.returncode == 0, baked.stderr
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing answers there: training must not ask

    def train(out: Path, weights: str) -> subprocess.CompletedProcess:
        command = [
            str(TRAINKIT), "train", "--trainer", str(HF_DETECTOR), "--imageset", str(demo.imageset_studio),
            "--labelset", str(demo.labels_csv), "--output-dir", str(out), "--device", "cpu",
            "--set", f"weights={weights}", "--set", f"image_size={SIZE}", "--set", "batch_size=2",
            "--set", "max_steps=4", "--set", "epochs=1",
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)

    first = train(tmp_path / "first", spec)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "every tensor loaded but the class layers" in first.stderr
    assert (tmp_path / "first" / "model.onnx").is_file()
    metrics = json.loads((tmp_path / "first" / "metrics.json").read_text())
    assert "map_50" in json.dumps(metrics)
    second = train(tmp_path / "second", str(tmp_path / "first"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"weights {tmp_path / 'first' / 'model'}: loaded" in second.stderr
    predicted = subprocess.run(
        [str(TRAINKIT), "predict", "--model", str(tmp_path / "second"), "--imageset", str(demo.imageset_studio),
         "--datastore-name", "", "--output-dir", str(tmp_path / "predictions"), "--draw", "0"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert (tmp_path / "predictions" / "predictions.csv").is_file()
    # The served model (MLflow pyfunc) answers as the other trainers' do.
    import mlflow.pyfunc
    import pandas as pd

    served = mlflow.pyfunc.load_model(str(tmp_path / "second" / "model"))
    image = str(sorted(demo.imageset_studio.rglob("*.jpg"))[0])
    [row] = served.predict(pd.DataFrame({"image": [image]}), params={"min_score": 0.0}).to_dict("records")
    assert set(row) == {"filename", "boxes"} and row["boxes"]
    assert all(0 <= b["box"]["topX"] <= 1 and b["label"] in ("circle", "square", "triangle") for b in row["boxes"])
