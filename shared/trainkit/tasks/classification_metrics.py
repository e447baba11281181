"""Classification's one evaluator (object crops), for training's validation and `trainkit evaluate` alike:
accuracy, per-class and macro precision / recall / F1 and the confusion matrix (torchmetrics), and a
precision-recall curve per class."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainkit.classmap import ClassMap
from trainkit.tasks.base import Evaluator, Prediction, Truth


class ClassificationEvaluator(Evaluator):
    """Samples whose true class the model does not know are left out."""

    def __init__(self, classes: ClassMap) -> None:
        from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassPrecisionRecallCurve

        self.classes = classes
        k = len(classes)
        self._confusion = MulticlassConfusionMatrix(k)
        self._curves = MulticlassPrecisionRecallCurve(k, thresholds=101)
        self._probabilities: list[np.ndarray] = []
        self._targets: list[int] = []

    def update(self, answer: Prediction, truth: Truth) -> None:
        # Gathered here and handed to torchmetrics at once (`_feed`): one call per crop costs 0.17 ms.
        if int(truth.labels[0]) >= 0:
            self._probabilities.append(answer.probabilities)
            self._targets.append(int(truth.labels[0]))

    def _feed(self) -> None:
        """Hand the samples `update` gathered to torchmetrics (once: the lists are emptied)."""
        if self._targets:
            probabilities = torch.from_numpy(np.stack(self._probabilities)).float()
            targets = torch.tensor(self._targets, dtype=torch.int64)
            self._confusion.update(probabilities.argmax(1), targets)
            self._curves.update(probabilities, targets)
            self._probabilities, self._targets = [], []

    @cached_property
    def matrix(self) -> np.ndarray:
        """(classes, classes): rows true class, columns predicted."""
        self._feed()
        return self._confusion.compute().numpy()

    @cached_property
    def metrics(self) -> dict[str, float]:
        matrix = self.matrix
        metrics = {"accuracy": float(np.trace(matrix) / max(1, matrix.sum()))}
        per_class: dict[str, list[float]] = {"precision": [], "recall": [], "f1": []}
        for i, name in enumerate(self.classes.names):
            said, found = matrix[:, i].sum(), matrix[i].sum()
            precision = float(matrix[i, i] / said) if said else 0.0
            recall = float(matrix[i, i] / found) if found else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            for key, value in (("precision", precision), ("recall", recall), ("f1", f1)):
                per_class[key].append(value)
                if said or found:
                    metrics[f"{key}_class/{name}"] = value
        # Macro averages over the classes that occur in this set (a class with no sample has no recall).
        present = [i for i in range(len(self.classes)) if matrix[i].sum()]
        for key, values in per_class.items():
            metrics[f"macro_{key}"] = float(sum(values[i] for i in present) / len(present)) if present else 0.0
        return metrics

    @property
    def details(self) -> dict[str, Any]:
        return {"confusion_matrix": {"labels": list(self.classes.names),
                                     "rows_truth_columns_predicted": self.matrix.tolist()}}  # fmt: skip

    def draw(self, folder: Path) -> list[Path]:
        """confusion_matrix.png."""
        from trainkit.tasks.drawing import draw_matrix

        return [draw_matrix(self.matrix, list(self.classes.names), folder / "confusion_matrix.png")]

    def report(self, folder: Path, worst: int) -> list[Path]:
        """pr_curves.png and confusion_matrix.png."""
        from trainkit.tasks.drawing import plot_pr_curves

        self._feed()
        precision, recall, _ = self._curves.compute()
        curves = [(name, r.numpy(), p.numpy()) for name, p, r in zip(self.classes.names, precision, recall,
                                                                        strict=True)]  # fmt: skip
        return [plot_pr_curves(curves, folder / "pr_curves.png", "precision-recall per class"), *self.draw(folder)]
