"""`trainkit evaluate`: a trained model on a labelled set, with the numbers and pictures that say where it fails.

The model's task's one evaluator (trainkit.tasks) computes the metrics, the same as training's
validation: for detection, COCO mAP (0.5:0.95, 0.5, 0.75, by size) and per-class AP, and at the
model's score threshold per-class precision and recall and a confusion matrix with a background row
and column (missed objects, false detections), the images with the most errors drawn; for object
crops, accuracy, per-class precision, recall and F1, the confusion matrix. Everything goes to
metrics.json and PNGs in the output folder, and to the active MLflow run when there is one (as in an
AzureML job).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainkit.atomic import write_json_atomic
from trainkit.classmap import ClassMap
from trainkit.errors import UserError
from trainkit.inference.predictor import BasePredictor
from trainkit.tasks import Evaluator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateConfig:
    """What `trainkit evaluate` runs (built from its command line)."""

    model: str
    imageset: Path
    labelset: Path
    output_dir: Path
    datastore_name: str | None = None
    min_score: float | None = None  # the operating threshold for precision, recall and the confusion matrix
    min_confidence: float = 0.0  # objects labelled with less confidence are left out, as in training
    draw: int = 10  # images with the most errors to draw
    device: str = "auto"
    batch_size: int = 8
    tiles: Mapping[str, object] = field(default_factory=dict)  # --tile-* options (override_tiles' keys)
    label_issues: bool = False  # rank the labels the model disagrees with (trainkit.inference.label_issues)


def run_evaluate(config: EvaluateConfig) -> dict:
    """Evaluate, write metrics.json and the pictures, log to an active MLflow run; returns the metrics."""
    from trainkit.inference.devices import resolve_device
    from trainkit.inference.predict import batch_loader, labelled_records, open_model

    if config.min_score is not None and not 0 <= config.min_score <= 1:
        raise UserError(f"--min-score {config.min_score}: must be between 0 and 1")
    predictor = open_model(config.model, resolve_device(config.device), config.tiles)
    task = predictor.task
    if config.label_issues and not task.reviews_labels:
        raise UserError(f"--label-issues: {config.model} is a {task.name} model; label issues (missing, loose "
                        "boxes) need a detection model")  # fmt: skip
    threshold = predictor.settings.min_score if config.min_score is None else config.min_score
    records, report = labelled_records(config.imageset, config.labelset, config.datastore_name,
                                       config.min_confidence)  # fmt: skip
    remap, unknown = _class_ids(records.classes, predictor.classes)
    if unknown:
        log.warning("classes the model does not know: %s; their objects count as missed", ", ".join(unknown))
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    loader = batch_loader(predictor, records, config.batch_size, task)
    evaluator = evaluate_loader(predictor, loader, remap, threshold)  # the loader warns of each file it leaves out
    metrics = {**evaluator.metrics, **evaluator.details}
    files = evaluator.report(out, config.draw)
    if config.label_issues:
        from trainkit.inference.label_issues import review

        found = review(evaluator, predictor.classes, config.draw, out)
        metrics.update(found.metrics())
        files += found.files
    document = {
        "model": config.model, "labelset": str(config.labelset), "images": len(records),
        "rows_left_out": dict(report.problems), "unknown_classes": unknown, "min_score": threshold, **metrics,
    }  # fmt: skip
    files.append(write_json_atomic(out / "metrics.json", document))
    _log_to_mlflow(metrics, files)
    return document


def evaluate_loader(
    predictor: BasePredictor, loader, remap: np.ndarray | None = None, min_score: float | None = None
) -> Evaluator:
    """The model's task's evaluator, updated with every unit of `loader` (its answer, every detection
    kept, against the labels of the loader's records, `remap`ped to the model's class ids: identity by
    default); `min_score`: the operating threshold (the model's own by default). Training's validation
    and `trainkit evaluate` both compute their metrics here."""
    from trainkit.inference.predict import batch_answers

    task, records = predictor.task, loader.records
    remap = np.arange(len(records.classes), dtype=np.int64) if remap is None else remap
    evaluator = task.evaluator(predictor.classes, predictor.settings.min_score if min_score is None else min_score)
    for batch in loader:
        for unit, answer in batch_answers(predictor, batch, loader, 0.0):
            evaluator.update(answer, task.truth(records, unit, remap))
    return evaluator


def _class_ids(names: tuple[str, ...], classes: ClassMap) -> tuple[np.ndarray, list[str]]:
    """The model's id for each label-set class id (-1: unknown to the model), and the unknown names."""
    ids = classes.id_of()
    remap = np.array([ids.get(name.strip(), -1) for name in names], np.int64)  # spaces never make a class
    return remap, [name for name in names if name.strip() not in ids]


def review_labels(model: Path, records, out: Path, device: torch.device, draw: int = 10, batch_size: int = 8):
    """`evaluate --label-issues` without the rest: the saved detection model at `model` against the
    labels of `records` (images it did not learn from): trainkit.inference.label_issues.review's
    out/label_issues.csv and drawings, when the model is good enough to judge them."""
    from trainkit.inference.label_issues import review
    from trainkit.inference.predict import batch_loader, open_model

    predictor = open_model(str(model), device)
    remap, _ = _class_ids(records.classes, predictor.classes)
    evaluator = evaluate_loader(predictor, batch_loader(predictor, records, batch_size), remap)
    return review(evaluator, predictor.classes, draw, out)


def _log_to_mlflow(metrics: dict, files: list[Path]) -> None:
    """The numbers and pictures, under evaluation/, in the run that is active (or that MLFLOW_RUN_ID names)."""
    import mlflow

    if mlflow.active_run() is None and not os.environ.get("MLFLOW_RUN_ID"):
        return
    run = mlflow.active_run() or mlflow.start_run(run_id=os.environ["MLFLOW_RUN_ID"])
    mlflow.log_metrics({f"eval/{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)})
    for path in files:
        mlflow.log_artifact(str(path), artifact_path=f"evaluation/{path.parent.name}" if path.parent.name == "worst"
                            else "evaluation")  # fmt: skip
    log.info("evaluation logged to MLflow run %s", run.info.run_id)
