"""The pictures people look at: boxes on images, a confusion matrix, precision-recall curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from trainkit.classmap import ClassMap
from trainkit.tasks.base import Prediction

DRAW_MIN_SCORE = 0.3  # training's validation pictures leave out what the model barely believes


def draw_boxes(
    items: list[tuple[str, Prediction, tuple[np.ndarray, np.ndarray]]],
    classes: ClassMap,
    folder: Path,
    prefix: str,
    min_score: float = DRAW_MIN_SCORE,
) -> list[Path]:
    """PNGs `prefix`_NN.png of images (path, answer, (true boxes, true class ids)) with the true boxes
    (green) and the answer's (red, score >= `min_score`)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n, (path, answer, (true_boxes, true_labels)) in enumerate(items):
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        draw = ImageDraw.Draw(image)
        for box, label in zip(np.asarray(true_boxes).tolist(), np.asarray(true_labels).tolist(), strict=True):
            draw.rectangle(box, outline=(0, 220, 0), width=2)
            draw.text((box[0] + 2, box[1] + 2), classes.names[label], fill=(0, 220, 0))
        for box, label, score in zip(answer.boxes.tolist(), answer.labels.tolist(), answer.scores.tolist(),
                                     strict=True):  # fmt: skip
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


def draw_matrix(matrix: np.ndarray, labels: list[str], path: Path) -> Path:
    """A confusion matrix as a PNG (rows: true class, columns: predicted), counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    darkest = int(matrix.max()) if matrix.size else 0
    for i, row in enumerate(matrix.tolist()):
        for j, count in enumerate(row):
            colour = "white" if darkest and count > darkest / 2 else "black"  # readable on dark cells
            ax.text(j, i, str(count), ha="center", va="center", color=colour)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_pr_curves(curves: list[tuple[str, np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """Precision against recall, one line per (class name, recall, precision)."""
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
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
