"""What to label next: the unlabelled images a model is least sure about, with its detections as
pre-labels (the active-learning loop: predict, label the queue, train again).

An image's uncertainty is that of its most doubtful detection, 1 - |2s - 1| for score s (1 at 0.5,
0 at 0 or 1), with the sum over its detections as the tie-break: an image the model finds many
half-sure objects in comes before one with a single such object. Detections down to LOW_SCORE count,
so predict runs below the model's threshold and keeps, as pre-labels, only what reaches it.
"""

from __future__ import annotations

import numpy as np

from trainkit.tasks import Prediction

LOW_SCORE = 0.05  # detections below this carry no signal worth ranking on
RANKS = ("uncertainty",)


def uncertainty(scores: np.ndarray) -> tuple[float, float]:
    """(the most doubtful detection's 1 - |2s - 1|, the sum over detections) of an image's scores."""
    scores = np.asarray(scores, np.float64)
    doubt = 1.0 - np.abs(2.0 * scores[scores >= LOW_SCORE] - 1.0)
    return (float(doubt.max()), float(doubt.sum())) if len(doubt) else (0.0, 0.0)


def queue(answers: list[tuple[int, Prediction]], top: int) -> list[tuple[int, Prediction, tuple[float, float]]]:
    """The `top` most uncertain answers (all if top is 0), the most uncertain first; ties keep input order."""
    ranked = [(i, a, uncertainty(a.scores)) for i, a in answers]
    ranked.sort(key=lambda item: (-item[2][0], -item[2][1]))
    return ranked[:top] if top else ranked
