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

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainkit.atomic import write_bytes_atomic
from trainkit.classmap import ClassMap
from trainkit.geometry.boxes import box_iou

log = logging.getLogger(__name__)

KINDS = ("missing", "spurious", "swap", "loose")
# A review is only as good as its model: under this mAP@0.5 on the labels it reviews, what the model
# disagrees with is mostly its own error (benchmarks/review_floor.py; docs/know-your-data.md).
REVIEW_FLOOR = 0.3


@dataclass(frozen=True)
class Review:
    """What a label review found and wrote; `counts` and `files` are empty when the model was too weak."""

    counts: dict[str, int]  # suspicions by kind (KINDS)
    files: list[Path]  # label_issues.csv, then the drawn images
    model_map_50: float  # the model's mAP@0.5 on the labels reviewed
    floor: float

    def metrics(self) -> dict[str, float]:
        """The counts, the model's mAP@0.5 and the floor, as label_issues/NAME."""
        found = {"model_map_50": self.model_map_50, "floor": self.floor, **self.counts}
        return {f"label_issues/{name}": value for name, value in found.items()}


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


def review(evaluator, classes: ClassMap, draw: int, out: Path, floor: float | None = None) -> Review:
    """out/label_issues.csv (a label-set row per image of a detection evaluator's with suspected errors,
    the worst first) and the first `draw` of them drawn in out/label_issues/; nothing (and an earlier
    review's files removed) when the model's mAP@0.5 on these labels is under `floor` (REVIEW_FLOOR)."""
    import pandas as pd

    from trainkit.tasks.base import labelled_object
    from trainkit.tasks.drawing import draw_boxes

    floor = REVIEW_FLOOR if floor is None else floor
    quality = float(evaluator.metrics["map_50"])
    if quality < floor:
        for stale in (out / "label_issues.csv", *(out / "label_issues").glob("issue_[0-9][0-9].png")):
            stale.unlink(missing_ok=True)
        log.warning("label review: the model reaches mAP@0.5 %.3f on these labels, under the review's floor of %.2f: "
                    "too weak to judge them, so no suspicions are written; train it further first", quality,
                    floor)  # fmt: skip
        return Review({}, [], quality, floor)

    rows, counts = [], dict.fromkeys(KINDS, 0)
    for image in evaluator.images:
        p, truth = image.answer, image.truth
        found = image_issues(truth.boxes, truth.labels, p.boxes, p.labels, p.scores)
        if not found:
            continue
        found.sort(key=lambda issue: -issue.score)
        for issue in found:
            counts[issue.kind] += 1
        objects = [labelled_object(box, classes.names[int(c)])
                   for box, c in zip(truth.boxes, truth.labels, strict=True)]  # fmt: skip
        listed = [{"kind": i.kind, "score": round(i.score, 4), "object": objects[i.object] if i.object >= 0 else None,
                   "proposal": labelled_object(i.proposal[0], classes.names[i.proposal[1]]) if i.proposal else None}
                  for i in found]  # fmt: skip
        rows.append((found[0].score, image, {
            "image_url": truth.image_url, "label": objects, "label_confidence": [1.0] * len(objects),
            "issue_score": round(found[0].score, 4), "issue_kinds": sorted({i.kind for i in found}), "issues": listed,
        }))  # fmt: skip
    rows.sort(key=lambda row: -row[0])
    table = pd.DataFrame([row for _, _, row in rows], columns=["image_url", "label", "label_confidence",
                                                                "issue_score", "issue_kinds", "issues"])  # fmt: skip
    for column in ("label", "label_confidence", "issue_kinds", "issues"):  # Python literals, as the labelling API
        table[column] = table[column].map(repr)
    path = out / "label_issues.csv"
    write_bytes_atomic(path, table.to_csv(index=False).encode("utf-8"))
    drawn = [(image.truth.path, image.answer, (image.truth.boxes, image.truth.labels)) for _, image, _ in rows[:draw]]
    log.info("label issues: %s; %s (the worst first)", ", ".join(f"{k} {n}" for k, n in counts.items()), path)
    return Review(counts, [path, *draw_boxes(drawn, classes, out / "label_issues", "issue")], quality, floor)
