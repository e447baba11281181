"""One image's detections from its tiles: windows' boxes mapped back to the image and merged.

An object on a seam is found in every tile that sees it; merging keeps one box for it. Two published
ways, both class-wise: NMS (AutoML's tiling: of boxes overlapping above an IoU, the best-scoring
stays) and SAHI's greedy NMM (boxes overlapping the best one above an intersection over the
smaller box are merged into it: their union, the best score), which joins the halves of an object
cut by a seam into one box. benchmarks/tiling.py measures both.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from trainkit.params import TileSpec


def to_image(boxes: np.ndarray, window: np.ndarray, input_size: int) -> np.ndarray:
    """Boxes (k, 4) xyxy in the model input's pixels (input_size square) of a window (x0, y0, x1, y1) in
    image pixels, as image pixels, clipped to the window."""
    x0, y0, x1, y1 = (float(v) for v in window)
    scale = np.array([(x1 - x0), (y1 - y0)] * 2, np.float64) / input_size
    out = np.asarray(boxes, np.float64).reshape(-1, 4) * scale + np.array([x0, y0, x0, y0])
    return np.clip(out, [x0, y0, x0, y0], [x1, y1, x1, y1]).astype(np.float32)


def merge(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, threshold: float, method: str = "nms"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections of one image gathered from several windows, merged class-wise; best score first."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(scores) < 2:
        return boxes, scores, labels
    if method == "nms":
        import torch
        from torchvision.ops import batched_nms

        keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), threshold)
        keep = keep.numpy()
        return boxes[keep], scores[keep], labels[keep]
    if method == "nmm":
        return _greedy_nmm(boxes, scores, labels, threshold)
    raise ValueError(f"unknown merge {method!r}")


def _greedy_nmm(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SAHI's greedy non-maximum merging: the best box absorbs every box of its class that overlaps it
    by more than `threshold` of the smaller one's area; repeat with the best box left."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    left = np.ones(len(scores), bool)
    out_boxes, out_scores, out_labels = [], [], []
    for i in range(len(scores)):
        if not left[i]:
            continue
        left[i] = False
        candidates = np.flatnonzero(left & (labels == labels[i]))
        box = boxes[i].copy()
        if len(candidates):
            other = boxes[candidates]
            wh = np.clip(np.minimum(other[:, 2:], box[2:]) - np.maximum(other[:, :2], box[:2]), 0, None)
            smaller = np.minimum(area[candidates], area[i])
            ios = np.divide(wh[:, 0] * wh[:, 1], smaller, out=np.zeros(len(candidates)), where=smaller > 0)
            absorbed = candidates[ios > threshold]
            if len(absorbed):
                box = np.concatenate([boxes[absorbed, :2].min(axis=0).clip(max=box[:2]),
                                      boxes[absorbed, 2:].max(axis=0).clip(min=box[2:])])  # fmt: skip
                left[absorbed] = False
        out_boxes.append(box)
        out_scores.append(scores[i])
        out_labels.append(labels[i])
    return (np.array(out_boxes, np.float32).reshape(-1, 4), np.array(out_scores, np.float32),
            np.array(out_labels, np.int64))  # fmt: skip


def run_starts(owners: np.ndarray) -> np.ndarray:
    """Where each image's inputs begin in a batch (an image's inputs are consecutive, with one owner)."""
    owners = np.asarray(owners).reshape(-1)
    return np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else np.zeros(0, np.int64)


def as_numpy(predictions: list[dict]) -> list[dict[str, np.ndarray]]:
    """A trainer's per-input predictions (torch tensors) as `per_image` takes them: float32 or integer arrays."""
    return [{key: value.float().cpu().numpy() if value.is_floating_point() else value.cpu().numpy()
             for key, value in out.items()} for out in predictions]  # fmt: skip


def per_image(
    outputs: list[dict[str, np.ndarray]],
    windows: np.ndarray | None,
    owners: np.ndarray,
    input_size: int,
    sizes: np.ndarray,
    spec: TileSpec | None,
) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Per-input detections (`boxes` in the model input's pixels, `scores`, `labels`) as per-image
    (owner, boxes in image pixels, scores, labels), an image's windows merged by `spec`.

    Inputs of one image are consecutive with the same owner; `windows` (x0, y0, x1, y1 per input,
    image pixels) None means each input is its whole image, whose (width, height) `sizes[k]` gives
    for the k-th distinct owner.
    """
    owners = np.asarray(owners).reshape(-1)
    bounds = np.r_[run_starts(owners), len(owners)]
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    # Only with the whole image among the windows may a tile's part of an object give way to it.
    keep_cut = spec is None or not spec.whole
    found = []
    for k, (start, stop) in enumerate(itertools.pairwise(bounds)):
        width, height = (float(v) for v in sizes[k])
        parts, keeps = [], []
        for i in range(start, stop):
            window = windows[i] if windows is not None else np.array([0, 0, width, height])
            parts.append(to_image(outputs[i]["boxes"], window, input_size))
            keeps.append(np.ones(len(parts[-1]), bool) if keep_cut else ~_cut_by_tile(parts[-1], window, width, height))
        keep = np.concatenate(keeps) if keeps else np.zeros(0, bool)
        boxes = np.concatenate(parts)[keep] if parts else np.zeros((0, 4), np.float32)
        scores = np.concatenate([outputs[i]["scores"].reshape(-1) for i in range(start, stop)]).astype(np.float32)
        labels = np.concatenate([outputs[i]["labels"].reshape(-1) for i in range(start, stop)]).astype(np.int64)
        scores, labels = scores[keep], labels[keep]
        if stop - start > 1 and spec is not None:
            boxes, scores, labels = merge(boxes, scores, labels, spec.nms, spec.merge)
        found.append((int(owners[start]), boxes, scores, labels))
    return found


EDGE = 0.01  # a box this close to a tile's inner edge (a share of the tile's side, at least 2 px) is cut by it


def _cut_by_tile(boxes: np.ndarray, window: np.ndarray, width: float, height: float) -> np.ndarray:
    """Which of a tile's boxes (image pixels) touch one of its edges inside the image: most likely a
    part of an object the tile cuts. With the whole image among the windows, such a part is left out of
    the merge: the object is seen whole by a neighbouring tile (the overlap) or the whole image (larger
    objects), and a part that outscored the whole would replace it."""
    x0, y0, x1, y1 = (float(v) for v in window)
    if x0 <= 0 and y0 <= 0 and x1 >= width and y1 >= height:
        return np.zeros(len(boxes), bool)  # the whole image cuts nothing
    margin_x, margin_y = max(2.0, EDGE * (x1 - x0)), max(2.0, EDGE * (y1 - y0))
    cut = np.zeros(len(boxes), bool)
    if x0 > 0:
        cut |= boxes[:, 0] <= x0 + margin_x
    if y0 > 0:
        cut |= boxes[:, 1] <= y0 + margin_y
    if x1 < width:
        cut |= boxes[:, 2] >= x1 - margin_x
    if y1 < height:
        cut |= boxes[:, 3] >= y1 - margin_y
    return cut
