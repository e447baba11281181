"""`trainkit evaluate`: a trained model on a labelled set, with the numbers and pictures that say where it fails.

Detection: COCO mAP (0.5:0.95, 0.5, 0.75) and per-class AP from torchmetrics (pycocotools' method),
a precision-recall curve per class at IoU 0.5, and at the model's score threshold per-class
precision and recall and a confusion matrix with a background row and column (missed objects,
false detections); the images with the most errors are drawn. Classifiers (object crops): accuracy,
per-class precision, recall and F1, the confusion matrix. Everything goes to metrics.json and PNGs
in the output folder, and to the active MLflow run when there is one (as in an AzureML job).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainkit.atomic import write_bytes_atomic, write_json_atomic
from trainkit.classmap import ClassMap
from trainkit.errors import UserError
from trainkit.evaluation import with_crowd
from trainkit.inference.predictor import BasePredictor, Prediction

log = logging.getLogger(__name__)

IOU = 0.5  # a detection matches an object when their boxes overlap this much


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


@dataclass
class _Image:
    path: str
    image_url: str
    truth_boxes: np.ndarray
    truth_labels: np.ndarray
    prediction: Prediction
    errors: int = 0


@dataclass
class _Counts:
    """Per class at the operating threshold: true positives, false positives, missed objects."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    confusion: np.ndarray  # (K + 1, K + 1): rows truth, columns prediction; index K is background

    @classmethod
    def empty(cls, k: int) -> _Counts:
        return cls(
            np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros((k + 1, k + 1), np.int64)
        )


def run_evaluate(config: EvaluateConfig) -> dict:
    """Evaluate, write metrics.json and the pictures, log to an active MLflow run; returns the metrics."""
    from trainkit.inference.devices import resolve_device
    from trainkit.inference.predict import labelled_records, open_model

    if config.min_score is not None and not 0 <= config.min_score <= 1:
        raise UserError(f"--min-score {config.min_score}: must be between 0 and 1")
    predictor = open_model(config.model, resolve_device(config.device), config.tiles)
    if config.label_issues and not predictor.detects:
        raise UserError(f"--label-issues: {config.model} classifies object crops; label issues (missing, loose "
                        "boxes) need a detection model")  # fmt: skip
    threshold = predictor.settings.min_score if config.min_score is None else config.min_score
    records, report = labelled_records(config.imageset, config.labelset, config.datastore_name,
                                       config.min_confidence)  # fmt: skip
    remap, unknown = _class_ids(records.classes, predictor.classes)
    if unknown:
        log.warning("classes the model does not know: %s; their objects count as missed", ", ".join(unknown))
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    if predictor.detects:
        metrics, files = _evaluate_detection(predictor, records, remap, threshold, config)
    else:
        metrics, files = _evaluate_crops(predictor, records, remap, config)
    document = {
        "model": config.model, "labelset": str(config.labelset), "images": len(records),
        "rows_left_out": dict(report.problems), "unknown_classes": unknown, "min_score": threshold, **metrics,
    }  # fmt: skip
    files.append(write_json_atomic(out / "metrics.json", document))
    _log_to_mlflow(metrics, files)
    return document


def _class_ids(names: tuple[str, ...], classes: ClassMap) -> tuple[np.ndarray, list[str]]:
    """The model's id for each label-set class id (-1: unknown to the model), and the unknown names."""
    ids = classes.id_of()
    remap = np.array([ids.get(name.strip(), -1) for name in names], np.int64)  # spaces never make a class
    return remap, [name for name in names if name.strip() not in ids]


def _evaluate_detection(predictor: BasePredictor, records, remap: np.ndarray, threshold: float, config):
    from torchmetrics.detection import MeanAveragePrecision

    classes = predictor.classes
    metric = MeanAveragePrecision(iou_type="bbox", box_format="xyxy", class_metrics=True, extended_summary=True)
    metric.warn_on_many_detections = False  # it keeps the best 100 per image, as COCO does; tiles give more
    k = len(classes)
    counts = _Counts.empty(k)
    images: list[_Image] = []
    for index, truth in _answered(predictor, records, remap, config.batch_size):
        target = {"boxes": torch.from_numpy(truth.truth_boxes), "labels": torch.from_numpy(truth.truth_labels)}
        if records.crowd is not None:
            boxes, ids = records.crowd.of(index)
            ids = remap[ids] if len(ids) else ids
            target = with_crowd(target, boxes[ids >= 0], ids[ids >= 0])
        metric.update([truth.prediction.tensors()], [target])
        truth.errors = _count(truth, threshold, counts)
        images.append(truth)
    result = metric.compute()
    metrics = {name: float(result[name]) for name in ("map", "map_50", "map_75")}
    # COCO's object sizes (area under 32^2, 96^2 px, above): -1 where the set has none of that size.
    metrics.update({name: float(result[name]) for name in ("map_small", "map_medium", "map_large")
                    if float(result[name]) >= 0})  # fmt: skip
    present = result["classes"].reshape(-1).tolist()
    for class_id, ap in zip(present, result["map_per_class"].reshape(-1).tolist(), strict=True):
        if 0 <= class_id < k and ap >= 0:
            metrics[f"map_class/{classes.names[class_id]}"] = ap
    for i, name in enumerate(classes.names):
        found = counts.tp[i] + counts.fn[i]
        said = counts.tp[i] + counts.fp[i]
        if found or said:
            metrics[f"precision_class/{name}"] = float(counts.tp[i] / said) if said else 0.0
            metrics[f"recall_class/{name}"] = float(counts.tp[i] / found) if found else 0.0
    metrics["missed_objects"] = int(counts.fn.sum())
    metrics["false_detections"] = int(counts.fp.sum())
    out = config.output_dir
    files = [_draw_pr_curves(result, present, classes, out / "pr_curves.png")]
    labels = [*classes.names, "background"]
    files.append(_draw_matrix(counts.confusion, labels, out / "confusion_matrix.png"))
    metrics["confusion_matrix"] = {"labels": labels, "rows_truth_columns_predicted": counts.confusion.tolist()}
    files += _draw_worst(images, classes, threshold, config.draw, out / "worst")
    if config.label_issues:
        found, written = _label_issues(images, classes, config.draw, out)
        metrics.update({f"label_issues/{kind}": n for kind, n in found.items()})
        files += written
    return metrics, files


def _answered(predictor: BasePredictor, records, remap: np.ndarray, batch_size: int) -> Iterator[tuple[int, _Image]]:
    """(record index, the image's objects in the model's class ids and its every detection) over
    `records`; objects of classes the model does not know are left out, unreadable files skipped."""
    from trainkit.inference.predict import batch_answers, batch_loader

    loader = batch_loader(predictor, records, batch_size)
    for batch in loader:
        for index, answer in batch_answers(predictor, batch, records, 0.0):
            item = records[index]
            labels = remap[item.class_ids] if len(item.class_ids) else np.zeros(0, np.int64)
            known = labels >= 0
            yield index, _Image(item.path, item.image_url, item.boxes[known], labels[known], answer)
    for path, reason in loader.skipped.items():
        log.warning("skipped %s: %s", path, reason)


def review_labels(model: Path, records, out: Path, device: torch.device, draw: int = 10,
                  batch_size: int = 8) -> tuple[dict[str, int], list[Path]]:  # fmt: skip
    """`evaluate --label-issues` without the metrics: the saved detection model at `model` against the
    labels of `records` (images it did not learn from), out/label_issues.csv and the worst `draw`
    drawn in out/label_issues/; the count of each kind and the files written."""
    from trainkit.inference.predict import open_model

    predictor = open_model(str(model), device)
    remap, _ = _class_ids(records.classes, predictor.classes)
    images = [image for _, image in _answered(predictor, records, remap, batch_size)]
    return _label_issues(images, predictor.classes, draw, out)


def _label_issues(images: list[_Image], classes: ClassMap, draw: int, out: Path) -> tuple[dict[str, int], list[Path]]:
    """label_issues.csv (a label-set row per image with suspected errors, the worst first) and the
    first `draw` of them drawn; the count of each kind."""
    from trainkit.evaluation import Evaluation, draw_detections
    from trainkit.inference.label_issues import KINDS, image_issues
    from trainkit.inference.responses import labelled_object

    rows, counts = [], dict.fromkeys(KINDS, 0)
    for image in images:
        p = image.prediction
        found = image_issues(image.truth_boxes, image.truth_labels, p.boxes, p.labels, p.scores)
        if not found:
            continue
        found.sort(key=lambda issue: -issue.score)
        for issue in found:
            counts[issue.kind] += 1
        objects = [labelled_object(box, classes.names[int(c)])
                   for box, c in zip(image.truth_boxes, image.truth_labels, strict=True)]  # fmt: skip
        listed = [{"kind": i.kind, "score": round(i.score, 4), "object": objects[i.object] if i.object >= 0 else None,
                   "proposal": labelled_object(i.proposal[0], classes.names[i.proposal[1]]) if i.proposal else None}
                  for i in found]  # fmt: skip
        rows.append((found[0].score, image, {
            "image_url": image.image_url, "label": objects, "label_confidence": [1.0] * len(objects),
            "issue_score": round(found[0].score, 4), "issue_kinds": sorted({i.kind for i in found}), "issues": listed,
        }))  # fmt: skip
    rows.sort(key=lambda row: -row[0])
    import pandas as pd

    table = pd.DataFrame([row for _, _, row in rows], columns=["image_url", "label", "label_confidence",
                                                                "issue_score", "issue_kinds", "issues"])  # fmt: skip
    for column in ("label", "label_confidence", "issue_kinds", "issues"):  # Python literals, as the labelling API
        table[column] = table[column].map(repr)
    path = out / "label_issues.csv"
    write_bytes_atomic(path, table.to_csv(index=False).encode("utf-8"))
    drawn = [(image.path, image.prediction.tensors(),
              {"boxes": torch.from_numpy(image.truth_boxes), "labels": torch.from_numpy(image.truth_labels)})
             for _, image, _ in rows[:draw]]  # fmt: skip
    log.info("label issues: %s; %s (the worst first)", ", ".join(f"{k} {n}" for k, n in counts.items()), path)
    return counts, [path, *draw_detections(Evaluation({}, drawn), classes, out / "label_issues", prefix="issue")]


def _count(image: _Image, threshold: float, counts: _Counts) -> int:
    """Match the image's detections above `threshold` to its objects (IoU >= 0.5, best score first);
    add to the per-class counts and the confusion matrix; return the image's errors."""
    from torchvision.ops import box_iou

    keep = image.prediction.scores >= threshold
    boxes, labels = image.prediction.boxes[keep], image.prediction.labels[keep]
    order = np.argsort(-image.prediction.scores[keep], kind="stable")
    background = counts.confusion.shape[0] - 1
    iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(image.truth_boxes)).numpy() if len(boxes) else None
    taken = np.zeros(len(image.truth_labels), bool)
    errors = 0
    for d in order:
        candidates = np.where(~taken & (iou[d] >= IOU))[0] if iou is not None and iou.shape[1] else np.array([], int)
        same = [c for c in candidates if image.truth_labels[c] == labels[d]]
        best = max(same or candidates.tolist(), key=lambda c: iou[d, c], default=None)
        if best is None:
            counts.fp[labels[d]] += 1
            counts.confusion[background, labels[d]] += 1
            errors += 1
            continue
        taken[best] = True
        truth = image.truth_labels[best]
        counts.confusion[truth, labels[d]] += 1
        if truth == labels[d]:
            counts.tp[truth] += 1
        else:  # the right place, the wrong class: a miss of one class and a false detection of another
            counts.fn[truth] += 1
            counts.fp[labels[d]] += 1
            errors += 1
    for missed in np.where(~taken)[0]:
        counts.fn[image.truth_labels[missed]] += 1
        counts.confusion[image.truth_labels[missed], background] += 1
        errors += 1
    return errors


def _evaluate_crops(predictor: BasePredictor, records, remap: np.ndarray, config):
    from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassPrecisionRecallCurve

    from trainkit.inference.predict import batch_loader

    classes = predictor.classes
    k = len(classes)
    loader = batch_loader(predictor, records, config.batch_size, task="object_crops")
    confusion = MulticlassConfusionMatrix(k)
    curves = MulticlassPrecisionRecallCurve(k, thresholds=101)
    for batch in loader:
        truth = torch.from_numpy(remap[batch.labels.cpu().numpy()])
        known = truth >= 0
        outputs = predictor.run(batch.images, np.ones((len(truth), 2), np.float32))
        probabilities = torch.from_numpy(np.stack([o["scores"] for o in outputs]))
        confusion.update(probabilities.argmax(1)[known], truth[known])
        curves.update(probabilities[known], truth[known])
    matrix = confusion.compute().numpy()
    metrics = {"accuracy": float(np.trace(matrix) / max(1, matrix.sum()))}
    for i, name in enumerate(classes.names):
        said, found = matrix[:, i].sum(), matrix[i].sum()
        if said or found:
            precision = float(matrix[i, i] / said) if said else 0.0
            recall = float(matrix[i, i] / found) if found else 0.0
            metrics[f"precision_class/{name}"] = precision
            metrics[f"recall_class/{name}"] = recall
            metrics[f"f1_class/{name}"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    metrics["confusion_matrix"] = {"labels": list(classes.names), "rows_truth_columns_predicted": matrix.tolist()}
    out = config.output_dir
    precision, recall, _ = curves.compute()
    files = [_plot_curves([(n, r.numpy(), p.numpy()) for n, p, r in zip(classes.names, precision, recall, strict=True)],
                          out / "pr_curves.png"),
             _draw_matrix(matrix, list(classes.names), out / "confusion_matrix.png")]  # fmt: skip
    return metrics, files


def _draw_pr_curves(result: dict, present: list[int], classes: ClassMap, path: Path) -> Path:
    precision = result["precision"]  # (IoU thresholds, 101 recall points, classes present, areas, max detections)
    recall = np.linspace(0, 1, precision.shape[1])
    curves = []
    for column, class_id in enumerate(present):
        if 0 <= class_id < len(classes):
            values = precision[0, :, column, 0, -1].numpy()  # IoU 0.5, every area, the most detections
            valid = values >= 0
            curves.append((classes.names[class_id], recall[valid], values[valid]))
    return _plot_curves(curves, path)


def _plot_curves(curves: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for name, recall, precision in curves:
        ax.plot(recall, precision, label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="lower left")
    ax.set_title(f"precision-recall per class (IoU {IOU})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _draw_matrix(matrix: np.ndarray, labels: list[str], path: Path) -> Path:
    from trainkit.evaluation import Evaluation, draw_confusion

    [written] = draw_confusion(Evaluation({}, confusion=matrix.tolist()), ClassMap(tuple(labels)), path.parent)
    return written if written == path else written.rename(path)


def _draw_worst(images: list[_Image], classes: ClassMap, threshold: float, n: int, folder: Path) -> list[Path]:
    from trainkit.evaluation import Evaluation, draw_detections

    worst = sorted((i for i in images if i.errors), key=lambda i: -i.errors)[:n]
    drawn = [(i.path, i.prediction.tensors(),
              {"boxes": torch.from_numpy(i.truth_boxes), "labels": torch.from_numpy(i.truth_labels)})
             for i in worst]  # fmt: skip
    return draw_detections(Evaluation({}, drawn), classes, folder, prefix="worst", min_score=threshold)


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
