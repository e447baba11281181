"""Tiles of large images: which windows an image is cut into, and what each window's targets are.

A 20 px object in a 4000 px photo is a pixel or two once the whole image is resized to the model's
input; cut into overlapping windows first, each resized alone, it stays visible. The same windows
are used in training (each window a sample), in evaluation and in prediction (every window of an
image through the model, boxes mapped back and merged: trainkit.geometry.tile_merge), so a model
sees at prediction time what it learned from.

Windows are in the image's displayed pixels, decided from its size alone; the whole image comes
first when `whole` is set (large objects cut by every tile are found there).
"""

from __future__ import annotations

import math

import numpy as np

from trainkit.geometry.windows import Window, relative_to
from trainkit.params import TileSpec

IGNORE_LABEL = -1  # a cut object's visible part: neither an object nor background (see window_targets)


def tile_windows(width: int, height: int, spec: TileSpec) -> list[Window]:
    """Windows covering every pixel of the image, each inside it, the whole image first if `spec.whole`.

    Along each side, n tiles of length t are spread evenly from one edge to the other: with a grid,
    t = ceil(L / (n - (n - 1) * overlap)) so that neighbours share `overlap` of a tile (more when
    rounding to whole pixels, never less); with a tile size, t is that size (at most L) and n is
    the fewest tiles that overlap by at least `overlap`. A grid finer than the image gives 1 px tiles.
    """
    if spec.grid is not None:
        xs = _spans(width, spec.grid[0], None, spec.overlap)
        ys = _spans(height, spec.grid[1], None, spec.overlap)
    else:
        xs = _spans(width, None, spec.size, spec.overlap)
        ys = _spans(height, None, spec.size, spec.overlap)
    tiles = [Window(x0, y0, w, h) for y0, h in ys for x0, w in xs]
    whole = Window(0, 0, int(width), int(height))
    tiles = [t for t in dict.fromkeys(tiles) if t != whole]
    return [whole, *tiles] if spec.whole or not tiles else tiles


def _spans(length: int, count: int | None, side: int | None, overlap: float) -> list[tuple[int, int]]:
    """(start, length) of the tiles along one side."""
    length = int(length)
    if count is not None:
        side = math.ceil(length / (count - (count - 1) * overlap))
    else:
        side = min(int(side or length), length)
        step = side * (1 - overlap)
        count = 1 if side >= length else math.ceil((length - side) / step - 1e-9) + 1
    side = max(1, min(side, length))
    if count == 1 or side == length:
        return [(0, length)]
    last = length - side
    starts = sorted({round(i * last / (count - 1)) for i in range(count)})
    return [(start, side) for start in starts]


def window_targets(
    boxes: np.ndarray, labels: np.ndarray, window: Window, min_visible: float
) -> tuple[np.ndarray, np.ndarray]:
    """A tile's training targets: pixel xyxy `boxes` as seen in `window`, relative to it ([0, 1] xyxy),
    mirrored if it is flipped.

    An object with at least `min_visible` of its area inside keeps its (clipped) box. One cut by the
    edge below that share is no object and no background either: its visible part is returned with
    label IGNORE_LABEL (the loader paints it out of the image, so no loss rewards or punishes a
    detection there). Objects wholly outside are dropped.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = window.x0, window.y0, window.x0 + window.width, window.y0 + window.height
    clipped = np.stack([np.clip(boxes[:, 0], x0, x1), np.clip(boxes[:, 1], y0, y1),
                        np.clip(boxes[:, 2], x0, x1), np.clip(boxes[:, 3], y0, y1)], axis=1)  # fmt: skip
    area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    inside = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1)
    visible = np.divide(inside, area, out=np.zeros_like(area), where=area > 0)
    seen = inside > 0
    ids = np.where(visible >= min_visible, np.asarray(labels).astype(np.int32), IGNORE_LABEL)[seen]
    return relative_to(clipped[seen], window), ids.astype(np.int32)
