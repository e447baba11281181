"""Tiles of large images: which windows an image is cut into, and what each window's targets are.

A 20 px object in a 4000 px photo is a pixel or two once the whole image is resized to the model's
input; cut into overlapping windows first, each resized alone, it stays visible. The same windows
are used in training (each window a sample), in evaluation and in prediction (every window of an
image through the model, boxes mapped back and merged: trainkit.inference.tile_merge), so a model
sees at prediction time what it learned from.

Windows are in the image's displayed pixels, decided from its size alone; the whole image comes
first when `whole` is set (large objects cut by every tile are found there).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from trainkit.loading.augment import Window

MERGES = ("nms", "nmm")
IGNORE_LABEL = -1  # a cut object's visible part: neither an object nor background (see window_targets)
_GRID = re.compile(r"^\s*(\d+)\s*[xX*]\s*(\d+)\s*$")


@dataclass(frozen=True)
class TileSpec:
    """How images are cut and how the windows' detections are merged.

    `grid` (columns, rows) or `size` (a square side in source pixels; images smaller than it are one
    tile across) says where the cuts are; neighbouring tiles overlap by at least `overlap` of a tile.
    """

    grid: tuple[int, int] | None = None
    size: int = 0
    overlap: float = 0.25  # AutoML's tile_overlap_ratio default
    nms: float = 0.25  # IoU (nms) or intersection over the smaller box (nmm) above which boxes merge
    whole: bool = True  # the whole image is a window too
    merge: str = "nms"  # nms: class-wise NMS; nmm: SAHI's greedy merging of overlapping boxes
    min_visible: float = 0.6  # training: a cut object keeps its box when this share of it is in the window

    def __post_init__(self) -> None:
        checks = {
            "tile_grid": (self.grid is None or (len(self.grid) == 2 and min(self.grid) >= 1), self.grid),
            "tile_size": (self.size >= 8 or self.size == 0, self.size),
            "tile_overlap": (0 <= self.overlap < 1, self.overlap),
            "tile_nms": (0 < self.nms <= 1, self.nms),
            "tile_merge": (self.merge in MERGES, self.merge),
            "tile_min_visible": (0 < self.min_visible <= 1, self.min_visible),
        }
        for name, (ok, value) in checks.items():
            if not ok:
                raise ValueError(f"hyperparameter {name!r} = {value!r} is out of range: {_RULES[name]}")
        if self.grid is not None and self.size:
            raise ValueError("hyperparameters 'tile_grid' and 'tile_size' both set: give one of them")
        if self.grid is None and not self.size:
            raise ValueError("tiling needs 'tile_grid' (e.g. 3x2) or 'tile_size' (pixels)")

    def windows(self, width: int, height: int) -> list[Window]:
        """The windows of a `width` x `height` image (see `tile_windows`)."""
        return tile_windows(width, height, self)

    def to_json(self) -> dict:
        return {**asdict(self), "grid": list(self.grid) if self.grid else None}

    @classmethod
    def from_json(cls, document: Mapping) -> TileSpec:
        grid = document.get("grid")
        return cls(**{**document, "grid": tuple(grid) if grid else None})


_RULES = {
    "tile_grid": "COLUMNSxROWS, each at least 1",
    "tile_size": "a side of at least 8 pixels, or 0",
    "tile_overlap": "a share of a tile, 0 or more and below 1",
    "tile_nms": "an overlap above 0 and at most 1",
    "tile_merge": f"one of {', '.join(MERGES)}",
    "tile_min_visible": "a share above 0 and at most 1",
}


def describe(spec: TileSpec) -> str:
    """One line for logs: `grid 3x2, overlap 0.25, + whole image, nms 0.25`."""
    cut = f"grid {spec.grid[0]}x{spec.grid[1]}" if spec.grid else f"{spec.size} px tiles"
    whole = ", + whole image" if spec.whole else ""
    return f"{cut}, overlap {spec.overlap:g}{whole}, {spec.merge} {spec.nms:g}"


def parse_grid(text: str, name: str = "tile_grid") -> tuple[int, int] | None:
    """'3x2' -> (3, 2) (columns, rows); '' or 'none' -> None; else a ValueError naming `name`."""
    if text.strip().lower() in ("", "none", "off"):
        return None
    match = _GRID.match(text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"{name} {text!r}: write COLUMNSxROWS, e.g. 3x2 (or none)")
    return int(match[1]), int(match[2])


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
    origin = np.array([x0, y0, x0, y0], np.float64)
    extent = np.array([window.width, window.height, window.width, window.height], np.float64)
    rel = (clipped[seen] - origin) / extent
    if window.flip:
        rel = np.stack([1.0 - rel[:, 2], rel[:, 1], 1.0 - rel[:, 0], rel[:, 3]], axis=1)
    return rel.astype(np.float32).reshape(-1, 4), ids.astype(np.int32)


def override_tiles(current: TileSpec | None, options: Mapping[str, object]) -> TileSpec | None:
    """The tiling a prediction runs with: the model's own (`current`) with `options` changed, keys as
    the hyperparameters' without `tile_` (grid as text: 'none' turns tiling off). A model trained
    without tiles predicts on them when `options` gives a grid or size. ValueError names what is wrong."""
    options = {key: value for key, value in options.items() if value is not None}
    if not options:
        return current
    changes = dict(options)
    if "grid" in changes:
        changes["grid"] = parse_grid(str(changes["grid"]))
        if changes["grid"] is None and not changes.get("size"):
            return None
        changes.setdefault("size", 0)
    elif changes.get("size"):
        changes["grid"] = None
    if current is None and changes.get("grid") is None and not changes.get("size"):
        raise ValueError(f"tile_{sorted(options)[0]} given, but the model predicts on whole images: "
                         "give tile_grid (e.g. 3x2) or tile_size too")  # fmt: skip
    base = asdict(current) if current is not None else {}
    return TileSpec(**{**base, **changes})
