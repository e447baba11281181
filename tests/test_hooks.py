"""A run's hooks, each alone: which ones a run's configuration switches on, and what each does when
its work fails (a warning, never a failed run) or succeeds."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import SmallSet

from trainkit.data.dataset import DataConfig, DatasetOptions, DatasetPair, load_dataset
from trainkit.tasks import Detection, ObjectCrops
from trainkit.training.hooks import DataReport, LabelReview, ModelLogging, OnnxExport, run_hooks
from trainkit.training.run import Run


class Recorder:
    """A tracker that remembers what it was given."""

    run_id, tracking_uri = "run", "file:./mlruns"

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: self.calls.append((name, args)) or "runs:/run/model"


def a_run(tmp_path: Path, dataset=None, task=None, exports_onnx: bool = True, **config) -> Run:
    trainer = SimpleNamespace(task=task or Detection(), exports_onnx=exports_onnx, name="t")
    settings = {"data_report": True, "label_issues": True, "register_as": "", "output_dir": tmp_path, **config}
    dataset = dataset or SimpleNamespace(val=[0, 1], class_map=None)
    run = Run(SimpleNamespace(**settings), dataset, SimpleNamespace(trainer=trainer), None, torch.device("cpu"),
              None, tmp_path / "checkpoints", None, None)  # fmt: skip
    run.tracker = Recorder()
    return run


def kinds(run: Run) -> list[type]:
    return [type(hook) for hook in run_hooks(run)]


def test_the_configuration_switches_each_hook(tmp_path: Path) -> None:
    assert kinds(a_run(tmp_path)) == [DataReport, OnnxExport, ModelLogging, LabelReview]
    assert DataReport not in kinds(a_run(tmp_path, data_report=False))
    assert OnnxExport not in kinds(a_run(tmp_path, exports_onnx=False))
    assert LabelReview not in kinds(a_run(tmp_path, label_issues=False))
    # no validation set to review, or a task whose labels are not boxes to review
    assert LabelReview not in kinds(a_run(tmp_path, dataset=SimpleNamespace(val=None)))
    assert LabelReview not in kinds(a_run(tmp_path, dataset=SimpleNamespace(val=[])))
    assert LabelReview not in kinds(a_run(tmp_path, task=ObjectCrops()))


def test_a_failed_export_or_review_is_a_warning_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import trainkit.inference.evaluate
    import trainkit.inference.onnx_export

    def broken(*args, **kwargs):
        raise RuntimeError("no such operator")

    monkeypatch.setattr(trainkit.inference.onnx_export, "export_onnx", broken)
    monkeypatch.setattr(trainkit.inference.evaluate, "review_labels", broken)
    run = a_run(tmp_path, dataset=SimpleNamespace(val=[0], class_map=None))
    outputs = SimpleNamespace(path=lambda name: tmp_path / name)
    with caplog.at_level(logging.WARNING):
        OnnxExport().stage(run, outputs, torch.nn.Identity(), SimpleNamespace())
        LabelReview().finished(run)
    assert "ONNX export failed (RuntimeError: no such operator)" in caplog.text
    assert "the label review failed (RuntimeError: no such operator)" in caplog.text
    assert not (tmp_path / "model.onnx").exists()
    OnnxExport().finished(run)  # nothing exported: nothing logged
    assert run.tracker.calls == []


def test_model_logging_registers_under_the_name_given(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = a_run(tmp_path, register_as="shapes")
    with caplog.at_level(logging.INFO):
        ModelLogging().finished(run)
    assert run.tracker.calls == [("log_model", (tmp_path / "model", "shapes"))]
    assert "registered as 'shapes'" in caplog.text


def test_the_data_report_writes_its_page_and_logs_the_checks(small_set: SmallSet, tmp_path: Path) -> None:
    dataset = load_dataset(DataConfig(DatasetPair(small_set.imageset, small_set.labels),
                                      options=DatasetOptions(datastore_name="")))  # fmt: skip
    run = a_run(tmp_path / "out", dataset=dataset)
    DataReport().started(run)
    assert (tmp_path / "out" / "data_report" / "report.html").is_file()
    assert (tmp_path / "out" / "data_report" / "checks.json").is_file()
    logged = dict(run.tracker.calls)
    assert "data/checks.tiny_box" in logged["log_params"][0]
    assert logged["log_artifacts"] == (tmp_path / "out" / "data_report", "data_report")
