"""A run's outputs are replaced together or not at all: a full disk while saving keeps the old set."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from trainkit.data.demo import DemoDataset
from trainkit.training import harness
from trainkit.training.outputs import OUTPUTS, StagedOutputs

SKELETON = Path(__file__).resolve().parents[1] / "trainers" / "skeleton"


def _old_set(folder: Path) -> dict[str, str]:
    (folder / "model").mkdir(parents=True)
    files = {name: f"old {name}" for name in ("run.json", "class_map.json", "metrics.json", "model.onnx")}
    files["model/MLmodel"] = "old model"
    for name, text in files.items():
        (folder / name).write_text(text)
    return files


def _contents(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_bytes().decode("latin-1") for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_publish_swaps_the_whole_set_and_drops_outputs_not_staged(tmp_path: Path) -> None:
    _old_set(tmp_path)
    (tmp_path / "checkpoints").mkdir()  # not an output: left alone
    outputs = StagedOutputs(tmp_path)
    for name in ("run.json", "class_map.json", "metrics.json"):
        outputs.path(name).write_text(f"new {name}")
    outputs.path("model").mkdir()
    (outputs.path("model") / "MLmodel").write_text("new model")
    assert outputs.publish() == ["run.json", "class_map.json", "metrics.json", "model"]
    assert _contents(tmp_path) == {
        "class_map.json": "new class_map.json", "metrics.json": "new metrics.json",
        "model/MLmodel": "new model", "run.json": "new run.json",
    }  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["checkpoints", *OUTPUTS[:4]])


def test_a_failed_rename_puts_the_old_set_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _old_set(tmp_path)
    outputs = StagedOutputs(tmp_path)
    for name in ("run.json", "metrics.json"):
        outputs.path(name).write_text("new")
    rename = os.rename

    def failing(src, dst):
        if Path(src).name == "metrics.json" and Path(src).parent == outputs.stage:
            raise OSError(errno.EIO, "Input/output error")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError):
        outputs.publish()
    outputs.discard()
    assert _contents(tmp_path) == old
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".outputs.") and any(p.iterdir())]


def test_a_full_disk_while_saving_the_model_keeps_the_previous_outputs(
    run_cli, demo: DemoDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    args = ["train", "--trainer", SKELETON, "--imageset", demo.imageset_studio, "--labelset", demo.labels_csv,
            "--datastore-name", "", "--output-dir", out, "--device", "cpu", "--set", "epochs=1"]  # fmt: skip
    first = run_cli(*args, "--set", "max_steps=2")
    assert first.code == 0, first.err
    before = _contents(out / "model") | {n: (out / n).read_text() for n in ("run.json", "metrics.json")}

    def full(folder: Path, *_a, **_k):
        (folder.parent / "half-written").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "data" / "model.pth"))

    monkeypatch.setattr(harness, "build_model_dir", full)
    second = run_cli(*args, "--set", "max_steps=3", "--checkpoint-dir", tmp_path / "other")
    assert second.code == 2, second.err
    last = second.err.strip().splitlines()[-1]
    assert "no space left on the disk writing" in last and "model.pth" in last, second.err
    after = _contents(out / "model") | {n: (out / n).read_text() for n in ("run.json", "metrics.json")}
    assert after == before
    assert json.loads((out / "metrics.json").read_text())["step"] == 2
    assert not list(out.glob(".outputs.*"))
