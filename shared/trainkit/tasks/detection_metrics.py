"""Detection's one evaluator, for training's validation and `trainkit evaluate` alike.

COCO mAP (0.5:0.95, 0.5, 0.75, by object size) and per-class AP from torchmetrics (pycocotools'
method), against every labelled box of each image, crowd regions counting as neither right nor
wrong; and at the operating threshold, per-class precision and recall and a confusion matrix with
a background row and column (missed objects, false detections), each image's errors counted so that
the worst can be drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainkit.classmap import ClassMap
from trainkit.tasks.base import Evaluator, Prediction, Truth

IOU = 0.5  # a detection matches an object when their boxes overlap this much
MAX_DRAWN = 6  # training's validation pictures: the first images of the set


@dataclass
class Answered:
    """One image's answer and truth, and its errors at the operating threshold."""

    truth: Truth
    answer: Prediction
    errors: int = 0


class DetectionEvaluator(Evaluator):
    """See the module doc. `images` keeps every image's answer (label review and drawing use them)."""

    def __init__(self, classes: ClassMap, min_score: float) -> None:
        from torchmetrics.detection import MeanAveragePrecision

        self.classes = classes
        self.min_score = min_score
        self._map = MeanAveragePrecision(iou_type="bbox", box_format="xyxy", class_metrics=True,
                                         extended_summary=True)  # fmt: skip
        self._map.warn_on_many_detections = False  # it keeps the best 100 per image, as COCO does; tiles give more
        k = len(classes)
        self.tp, self.fp, self.fn = (np.zeros(k, np.int64) for _ in range(3))
        self.confusion = np.zeros((k + 1, k + 1), np.int64)  # rows truth, columns prediction; index k: background
        self.images: list[Answered] = []

    def update(self, answer: Prediction, truth: Truth) -> None:
        target = {"boxes": torch.from_numpy(truth.boxes), "labels": torch.from_numpy(truth.labels)}
        if len(truth.crowd_labels):
            target = {
                "boxes": torch.cat([target["boxes"], torch.from_numpy(truth.crowd_boxes)]),
                "labels": torch.cat([target["labels"], torch.from_numpy(truth.crowd_labels)]),
                "iscrowd": torch.cat([torch.zeros(len(truth.labels), dtype=torch.int64),
                                      torch.ones(len(truth.crowd_labels), dtype=torch.int64)]),
            }  # fmt: skip
        self._map.update([answer.tensors()], [target])
        self.images.append(Answered(truth, answer, self._count(answer, truth)))

    @cached_property
    def _result(self) -> dict[str, Any]:
        return self._map.compute()

    @cached_property
    def metrics(self) -> dict[str, float]:
        result, classes = self._result, self.classes
        metrics = {name: float(result[name]) for name in ("map", "map_50", "map_75")}
        # COCO's object sizes (area under 32^2, 96^2 px, above): -1 where the set has none of that size.
        metrics.update({name: float(result[name]) for name in ("map_small", "map_medium", "map_large")
                        if float(result[name]) >= 0})  # fmt: skip
        for class_id, ap in zip(self._present, result["map_per_class"].reshape(-1).tolist(), strict=True):
            if 0 <= class_id < len(classes) and ap >= 0:  # -1: the class has no true box in this set
                metrics[f"map_class/{classes.names[class_id]}"] = float(ap)
        for i, name in enumerate(classes.names):
            found, said = self.tp[i] + self.fn[i], self.tp[i] + self.fp[i]
            if found or said:
                metrics[f"precision_class/{name}"] = float(self.tp[i] / said) if said else 0.0
                metrics[f"recall_class/{name}"] = float(self.tp[i] / found) if found else 0.0
        metrics["missed_objects"] = int(self.fn.sum())
        metrics["false_detections"] = int(self.fp.sum())
        return metrics

    @property
    def _present(self) -> list[int]:
        return self._result["classes"].reshape(-1).tolist()

    @property
    def details(self) -> dict[str, Any]:
        labels = [*self.classes.names, "background"]
        return {"confusion_matrix": {"labels": labels, "rows_truth_columns_predicted": self.confusion.tolist()}}

    def draw(self, folder: Path) -> list[Path]:
        """The first MAX_DRAWN validation images, true boxes green, answers red."""
        from trainkit.tasks.drawing import draw_boxes

        return draw_boxes([_drawn(image) for image in self.images[:MAX_DRAWN]], self.classes, folder, "val")

    def report(self, folder: Path, worst: int) -> list[Path]:
        """pr_curves.png (IoU 0.5), confusion_matrix.png and the `worst` images by errors in worst/."""
        from trainkit.tasks.drawing import draw_boxes, draw_matrix, plot_pr_curves

        precision = self._result["precision"]  # (IoU thresholds, 101 recall points, classes, areas, max detections)
        recall = np.linspace(0, 1, precision.shape[1])
        curves = []
        for column, class_id in enumerate(self._present):
            if 0 <= class_id < len(self.classes):
                values = precision[0, :, column, 0, -1].numpy()  # IoU 0.5, every area, the most detections
                valid = values >= 0
                curves.append((self.classes.names[class_id], recall[valid], values[valid]))
        files = [plot_pr_curves(curves, folder / "pr_curves.png", f"precision-recall per class (IoU {IOU})")]
        files.append(draw_matrix(self.confusion, [*self.classes.names, "background"], folder / "confusion_matrix.png"))
        chosen = sorted((i for i in self.images if i.errors), key=lambda i: -i.errors)[:worst]
        return files + draw_boxes([_drawn(i) for i in chosen], self.classes, folder / "worst", "worst", self.min_score)

    def _count(self, answer: Prediction, truth: Truth) -> int:
        """Match the detections above the threshold to the objects (IoU >= 0.5, best score first); add to
        the per-class counts and the confusion matrix; return the image's errors."""
        from torchvision.ops import box_iou

        keep = answer.scores >= self.min_score
        boxes, labels = answer.boxes[keep], answer.labels[keep]
        order = np.argsort(-answer.scores[keep], kind="stable")
        background = self.confusion.shape[0] - 1
        iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(truth.boxes)).numpy() if len(boxes) else None
        taken = np.zeros(len(truth.labels), bool)
        errors = 0
        for d in order:
            candidates = (
                np.where(~taken & (iou[d] >= IOU))[0] if iou is not None and iou.shape[1] else np.array([], int)
            )
            same = [c for c in candidates if truth.labels[c] == labels[d]]
            best = max(same or candidates.tolist(), key=lambda c: iou[d, c], default=None)
            if best is None:
                self.fp[labels[d]] += 1
                self.confusion[background, labels[d]] += 1
                errors += 1
                continue
            taken[best] = True
            true = truth.labels[best]
            self.confusion[true, labels[d]] += 1
            if true == labels[d]:
                self.tp[true] += 1
            else:  # the right place, the wrong class: a miss of one class and a false detection of another
                self.fn[true] += 1
                self.fp[labels[d]] += 1
                errors += 1
        for missed in np.where(~taken)[0]:
            self.fn[truth.labels[missed]] += 1
            self.confusion[truth.labels[missed], background] += 1
            errors += 1
        return errors


def _drawn(image: Answered) -> tuple[str, Prediction, tuple[np.ndarray, np.ndarray]]:
    return image.truth.path, image.answer, (image.truth.boxes, image.truth.labels)
