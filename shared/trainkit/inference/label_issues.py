"""Suspected label errors: where a trained model disagrees with the labels, ranked by how much.

For each image, the labelled objects against the model's detections (class ids of the model):
  missing   a confident detection that overlaps no labelled object (IoU < `free_iou` with all): an
            object nobody labelled. One that half covers a labelled object is the model's misplaced
            box far more often than a second object (measured on the demo data: benchmarks/label_issues.py).
            Score: the detection's score.
  spurious  a labelled object with no detection of any class near it (IoU >= `near_iou`) above
            `low_score`: a box around nothing. Score: 1 - the best nearby detection's score.
  swap      a labelled object that a confident detection of another class covers (IoU >= `match_iou`)
            better than any detection of its own class: the class is wrong. Score: that detection's
            score less its own class's best.
  loose     a labelled object whose best detection of its own class is confident but overlaps it
            only in part (near_iou <= IoU < `tight_iou`): the box is off. Score: the detection's
            score x (1 - IoU).
The detections of a model that learned from the same images agree with their labels, errors
included: score images the model did not train on (the validation split, or K folds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainkit.geometry.boxes import box_iou

KINDS = ("missing", "spurious", "swap", "loose")


@dataclass(frozen=True)
class IssueOptions:
    """Thresholds of the four kinds (see the module doc)."""

    confident: float = 0.5
    low_score: float = 0.05
    match_iou: float = 0.5
    near_iou: float = 0.1
    tight_iou: float = 0.75
    free_iou: float = 0.3


@dataclass(frozen=True)
class Issue:
    """One suspected error in one image. `object` indexes the image's labelled objects (-1 for a missing
    label); `proposal` is the model's box (xyxy pixels) and class id, or None where it proposes removal."""

    kind: str
    score: float
    object: int
    proposal: tuple[tuple[float, float, float, float], int] | None


def image_issues(
    boxes: np.ndarray,
    labels: np.ndarray,
    pred_boxes: np.ndarray,
    pred_labels: np.ndarray,
    pred_scores: np.ndarray,
    options: IssueOptions = IssueOptions(),
) -> list[Issue]:
    """The suspected errors of one image's labels (`boxes`, `labels`) given the model's detections."""
    issues: list[Issue] = []
    iou = box_iou(boxes, pred_boxes)  # (objects, detections)
    scores = np.asarray(pred_scores, np.float64)
    confident = scores >= options.confident
    explained = set()  # detections that a loose label already accounts for: not missing objects too
    for k in range(len(boxes)):
        near = (iou[k] >= options.near_iou) & (scores >= options.low_score)
        if not near.any():
            best = float(scores[iou[k] >= options.near_iou].max()) if (iou[k] >= options.near_iou).any() else 0.0
            issues.append(Issue("spurious", 1.0 - best, k, None))
            continue
        own = pred_labels == labels[k]
        covering = iou[k] >= options.match_iou
        own_best = float(scores[own & covering].max()) if (own & covering).any() else 0.0
        other = covering & ~own & confident
        if other.any():
            d = int(np.argmax(np.where(other, scores, -1.0)))
            if scores[d] > own_best:
                issues.append(Issue("swap", float(scores[d]) - own_best, k, (_box(boxes[k]), int(pred_labels[d]))))
                continue
        mine = own & confident & (iou[k] >= options.near_iou)
        if mine.any():
            d = int(np.argmax(np.where(mine, iou[k], -1.0)))
            if iou[k, d] < options.tight_iou:
                explained.add(d)
                issues.append(Issue("loose", float(scores[d]) * (1.0 - float(iou[k, d])), k,
                                    (_box(pred_boxes[d]), int(labels[k]))))  # fmt: skip
    for d in np.nonzero(confident)[0]:
        if int(d) not in explained and (not len(boxes) or iou[:, d].max() < options.free_iou):
            issues.append(Issue("missing", float(scores[d]), -1, (_box(pred_boxes[d]), int(pred_labels[d]))))
    return issues


def _box(box: np.ndarray) -> tuple[float, float, float, float]:
    return tuple(round(float(v), 1) for v in box)  # type: ignore[return-value]
