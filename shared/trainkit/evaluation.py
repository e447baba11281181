"""Evaluation with torchmetrics (detection mAP; classification accuracy, precision, recall, confusion
matrix), and the pictures people look at (curves, boxes on images, the confusion matrix)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from trainkit.batch import Batch, BatchLoader, to_float
from trainkit.classmap import ClassMap

MAX_DRAWN = 6
# The summary metrics each built-in evaluation returns (logged as val/NAME; per-class ones besides).
DETECTION_METRICS = ("map", "map_50", "map_75")
CLASSIFICATION_METRICS = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
DRAW_MIN_SCORE = 0.3


@dataclass
class Evaluation:
    """Metrics of one pass over the validation set, and a few samples to draw."""

    metrics: dict[str, float]
    drawn: list[tuple[str, dict[str, torch.Tensor], dict[str, torch.Tensor]]] = field(default_factory=list)
    confusion: list[list[int]] | None = None  # classification: rows true class, columns predicted


def _predictions(
    trainer, model: torch.nn.Module, loader: BatchLoader, amp: bool
) -> Iterator[tuple[Batch, list[dict[str, torch.Tensor]]]]:
    """(batch, the trainer's predictions for it) over `loader`, the model in eval mode, no gradients."""
    model.eval()
    device = loader.device
    dtype = trainer.amp_dtype(device) if amp and device.type == "cuda" else None
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for batch in loader:
            yield batch, trainer.predict(model, to_float(batch.images, trainer.mean, trainer.std), batch)


def evaluate_classification(
    trainer, model: torch.nn.Module, loader: BatchLoader, classes: ClassMap, amp: bool
) -> Evaluation:
    """Accuracy, macro and per-class precision / recall / F1 and the confusion matrix over `loader`."""
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassConfusionMatrix,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

    n = len(classes)
    metrics = {
        "accuracy": MulticlassAccuracy(n, average="micro"),
        "precision": MulticlassPrecision(n, average="none"),
        "recall": MulticlassRecall(n, average="none"),
        "f1": MulticlassF1Score(n, average="none"),
        "confusion": MulticlassConfusionMatrix(n),
    }
    seen = torch.zeros(n, dtype=torch.bool)
    for batch, predictions in _predictions(trainer, model, loader, amp):
        predicted = torch.stack([p["labels"] for p in predictions]).reshape(-1).cpu()
        truth = batch.labels.reshape(-1).cpu()
        seen[truth] = True
        for metric in metrics.values():
            metric.update(predicted, truth)
    out = {"accuracy": float(metrics["accuracy"].compute())}
    per_class = {name: metrics[name].compute().tolist() for name in ("precision", "recall", "f1")}
    # Macro averages over the classes that occur in this set (a class with no sample has no recall).
    present = [i for i in range(n) if seen[i]]
    for name, values in per_class.items():
        out[f"macro_{name}"] = float(sum(values[i] for i in present) / len(present)) if present else 0.0
        for i in present:
            out[f"{name}_class/{classes.names[i]}"] = float(values[i])
    confusion = metrics["confusion"].compute().tolist()
    return Evaluation(out, confusion=[[int(v) for v in row] for row in confusion])


def draw_confusion(evaluation: Evaluation, classes: ClassMap, folder: Path) -> list[Path]:
    """The confusion matrix as a PNG (rows: true class, columns: predicted), counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if evaluation.confusion is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(evaluation.confusion, cmap="Blues")
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes.names, rotation=45, ha="right")
    ax.set_yticks(ticks, classes.names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    darkest = max((max(row) for row in evaluation.confusion), default=0)
    for i, row in enumerate(evaluation.confusion):
        for j, count in enumerate(row):
            colour = "white" if darkest and count > darkest / 2 else "black"  # readable on dark cells
            ax.text(j, i, str(count), ha="center", va="center", color=colour)
    fig.tight_layout()
    out = folder / "confusion_matrix.png"
    fig.savefig(out)
    plt.close(fig)
    return [out]


def evaluate_detection(
    trainer, model: torch.nn.Module, loader: BatchLoader, classes: ClassMap, amp: bool
) -> Evaluation:
    """mAP@0.5:0.95, mAP@0.5 and per-class AP over `loader` (eval mode), in original image pixels,
    against every labelled box of each image (with tiling, the windows' detections merged first)."""
    from torchmetrics.detection import MeanAveragePrecision

    from trainkit.loading.tile_merge import as_numpy, per_image, run_starts

    metric = MeanAveragePrecision(iou_type="bbox", box_format="xyxy", class_metrics=True)
    metric.warn_on_many_detections = False  # it keeps the best 100 per image, as COCO does; tiles give more
    records = loader.records
    spec = getattr(getattr(loader, "config", None), "tiles", None)
    drawn = []
    for batch, predictions in _predictions(trainer, model, loader, amp):
        owners = batch.indices.numpy()
        windows = batch.windows.numpy() if batch.windows is not None else None
        sizes = records.sizes[owners[run_starts(owners)]]
        found = per_image(as_numpy(predictions), windows, owners, batch.images.shape[-1], sizes, spec)
        preds, targets = [], []
        for image, boxes, scores, labels in found:
            preds.append({"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(scores),
                          "labels": torch.from_numpy(labels)})  # fmt: skip
            true = records[image]
            truth = {"boxes": torch.from_numpy(np.asarray(true.boxes, np.float32)).reshape(-1, 4),
                     "labels": torch.from_numpy(np.asarray(true.class_ids, np.int64))}  # fmt: skip
            targets.append(with_crowd(truth, *records.crowd.of(image)) if records.crowd is not None else truth)
            if len(drawn) < MAX_DRAWN:
                drawn.append((true.path, preds[-1], targets[-1]))
        metric.update(preds, targets)
    result = metric.compute()
    metrics = {name: float(result[name]) for name in DETECTION_METRICS}
    per_class = result["map_per_class"].reshape(-1).tolist()
    for class_id, ap in zip(result["classes"].reshape(-1).tolist(), per_class, strict=True):
        if 0 <= class_id < len(classes) and ap >= 0:  # -1: the class has no true box in this set
            metrics[f"map_class/{classes.names[class_id]}"] = float(ap)
    return Evaluation(metrics, drawn)


def with_crowd(target: dict[str, torch.Tensor], boxes: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
    """A mAP target with crowd regions added (`iscrowd` 1): detections inside them count as neither
    true nor false positives, as COCO's evaluation has it."""
    return {
        "boxes": torch.cat([target["boxes"], torch.from_numpy(np.asarray(boxes, np.float32)).reshape(-1, 4)]),
        "labels": torch.cat([target["labels"], torch.from_numpy(np.asarray(labels, np.int64))]),
        "iscrowd": torch.cat([torch.zeros(len(target["labels"]), dtype=torch.int64),
                              torch.ones(len(labels), dtype=torch.int64)]),
    }  # fmt: skip


def draw_detections(
    evaluation: Evaluation, classes: ClassMap, folder: Path, prefix: str = "val", min_score: float = DRAW_MIN_SCORE
) -> list[Path]:
    """PNGs of images with their true boxes (green) and predictions (red, score >= `min_score`)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n, (path, pred, target) in enumerate(evaluation.drawn):
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        draw = ImageDraw.Draw(image)
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
            draw.rectangle(box, outline=(0, 220, 0), width=2)
            draw.text((box[0] + 2, box[1] + 2), classes.names[label], fill=(0, 220, 0))
        for box, label, score in zip(
            pred["boxes"].tolist(), pred["labels"].tolist(), pred["scores"].tolist(), strict=True
        ):
            if score >= min_score and 0 <= label < len(classes):
                draw.rectangle(box, outline=(230, 30, 30), width=2)
                draw.text((box[0] + 2, box[3] - 12), f"{classes.names[label]} {score:.2f}", fill=(230, 30, 30))
        out = folder / f"{prefix}_{n:02d}.png"
        image.save(out)
        written.append(out)
    # An earlier run into the same folder may have drawn more: its extra pictures are not of this one.
    for stale in set(folder.glob(f"{prefix}_[0-9][0-9].png")) - set(written):
        stale.unlink(missing_ok=True)
    return written


def plot_curves(history: dict[str, list[tuple[int, float]]], folder: Path) -> list[Path]:
    """One PNG per metric series (x: optimiser step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, points in history.items():
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, marker="o" if len(points) < 30 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out = folder / f"{name.replace('/', '_')}.png"
        fig.savefig(out)
        plt.close(fig)
        written.append(out)
    return written
