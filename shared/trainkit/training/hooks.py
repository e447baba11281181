"""What a run does besides training, as hooks on it: each switchable, each testable alone.

A hook is asked three times, on rank 0 only: `started` (tracking has begun, no step taken),
`stage` (the output set is being written: add to it; it is published together, see
training.outputs) and `finished` (the outputs are published). `run_hooks` picks the hooks a run's
configuration and trainer switch on:

    DataReport    the dataset report (data_report/, MLflow)           --data-report on (default)
    OnnxExport    model.onnx beside the MLflow model                  the trainer's exports_onnx
    ModelLogging  the model in the MLflow run, registered as NAME     always; --register-as NAME
    LabelReview   the validation labels the saved model doubts        --label-issues on, a validation
                                                                      set, a task that reviews labels
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from trainkit.atomic import write_json_atomic

if TYPE_CHECKING:
    from torch import nn

    from trainkit.inference.settings import ModelSettings
    from trainkit.training.outputs import StagedOutputs
    from trainkit.training.run import Run

log = logging.getLogger(__name__)


class RunHook:
    """Base of the hooks: every method does nothing unless a hook says otherwise."""

    def started(self, run: Run) -> None:
        """After tracking began, before the first step (not when a run resumes: it started before)."""

    def stage(self, run: Run, outputs: StagedOutputs, model: nn.Module, settings: ModelSettings) -> None:
        """While the output set is written: `model` is what the MLflow model saves (the trainer's export)."""

    def finished(self, run: Run) -> None:
        """After the output set is published."""


class DataReport(RunHook):
    """`validate --report`'s report of the run's data, in OUTPUT_DIR/data_report and the MLflow run; the
    checks' counts are logged as params (data/checks.*), so runs can be compared on them."""

    def started(self, run: Run) -> None:
        from trainkit.data.checks import CheckOptions
        from trainkit.data.report import dataset_checks, dataset_splits
        from trainkit.data.visual_report import write_report

        checks = dataset_checks(run.dataset, CheckOptions())
        report = write_report(dataset_splits(run.dataset), checks, run.output_dir / "data_report").parent
        write_json_atomic(report / "checks.json", checks.to_json())
        found = ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in checks.counts().items() if n)
        log.info("data report: %s (checks: %s)", report / "report.html", found or "nothing found")
        run.tracker.log_params({f"data/checks.{name}": n for name, n in checks.counts().items()})
        run.tracker.log_artifacts(report, "data_report")


class OnnxExport(RunHook):
    """model.onnx beside the MLflow model. A failure here costs the run nothing: the MLflow model is
    complete, so it is a warning saying how to retry, not a failed run."""

    def stage(self, run: Run, outputs: StagedOutputs, model: nn.Module, settings: ModelSettings) -> None:
        from trainkit.inference.onnx_export import export_onnx
        from trainkit.inference.predictor import Predictor

        predictor = Predictor(run.trainer, model, run.dataset.class_map, settings, torch.device("cpu"))
        try:
            export_onnx(predictor, outputs.path("model.onnx"))
        except Exception as exc:  # any exporter failure: the trained model itself is safe
            log.warning(
                "ONNX export failed (%s: %s); the MLflow model is complete; retry with `trainkit export`, or set "
                "exports_onnx = False on the trainer", type(exc).__name__, " ".join(str(exc).split())[:300],
            )  # fmt: skip

    def finished(self, run: Run) -> None:
        path = run.output_dir / "model.onnx"
        if path.exists():
            log.info("ONNX model: %s", path)
            run.tracker.log_artifact(path)


class ModelLogging(RunHook):
    """The model folder into the MLflow run, and into the model registry under `--register-as`."""

    def finished(self, run: Run) -> None:
        register_as = run.config.register_as
        model_uri = run.tracker.log_model(run.output_dir / "model", register_as)
        log.info("model: %s (MLflow %s, tracking %s)", run.output_dir / "model", model_uri, run.tracker.tracking_uri)
        if register_as:
            log.info("registered as %r", register_as)


class LabelReview(RunHook):
    """The saved model against the validation labels, which it did not learn from: `evaluate
    --label-issues`'s label_issues.csv and drawings in the output folder and the MLflow run."""

    def finished(self, run: Run) -> None:
        from trainkit.inference.evaluate import review_labels

        out = run.output_dir
        try:
            review = review_labels(out / "model", run.dataset.val, out, run.device)
        except Exception as exc:  # the model and its outputs are complete: a failed review costs the run nothing
            log.warning(
                "the label review failed (%s: %s); the model is complete; run `trainkit evaluate --label-issues` on "
                "the validation set to retry", type(exc).__name__, " ".join(str(exc).split())[:300],
            )  # fmt: skip
            return
        # The model's quality and the floor are logged either way: a review left out says why.
        run.tracker.log_metrics(review.metrics(), run.state.position.step)
        if review.files:
            run.tracker.log_artifact(review.files[0])
        if len(review.files) > 1:
            run.tracker.log_artifacts(review.files[1].parent, "label_issues")


def run_hooks(run: Run) -> list[RunHook]:
    """The hooks `run`'s configuration, trainer and data switch on, in the order they act."""
    validated = run.dataset.val is not None and len(run.dataset.val) > 0
    chosen: list[tuple[bool, RunHook]] = [
        (run.config.data_report, DataReport()),
        (run.trainer.exports_onnx, OnnxExport()),
        (True, ModelLogging()),
        (run.config.label_issues and validated and run.trainer.task.reviews_labels, LabelReview()),
    ]
    return [hook for on, hook in chosen if on]
