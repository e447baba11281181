"""How big the objects are once an image is resized for the model, and whether tiles would help.

A model sees each image (or tile) resized to `image_size` square; an object under about 16 px there
is hard to learn and to find (under 8 px, nearly impossible). `validate` reports these counts and,
when many objects are that small, the tile grid (trainkit.geometry.tiles) that brings most of them
to 16 px: with c columns overlapping by a quarter, a tile is W / (0.75 c + 0.25) wide.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from trainkit.data.records import Records

SMALL_PX = 16  # under this many pixels at the model's input, an object is hard to learn
TINY_PX = 8
MANY = 0.1  # the share of objects under SMALL_PX above which a grid is suggested
COVERED = 0.9  # the suggested grid brings this share of objects to SMALL_PX or more
OVERLAP = 0.25  # the suggestion's tile_overlap (the default)
MAX_GRID = 8


@dataclass(frozen=True)
class ObjectSizes:
    """Objects' size against their image's, and at the model's input size."""

    objects: int
    image_size: int
    median_share: float  # median over objects of (box side / image side), the mean of x and y
    median_box: tuple[float, float]  # median width, height in pixels
    median_image: tuple[float, float]  # median image width, height
    under_16: int
    under_8: int
    grid: tuple[int, int] | None  # a suggested tile_grid (columns, rows), when many objects are small

    def to_json(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """The `validate` summary line."""
        return (f"median box {self.median_box[0]:.0f} x {self.median_box[1]:.0f} px in {self.median_image[0]:.0f} x "
                f"{self.median_image[1]:.0f} px images ({100 * self.median_share:.1f}% of the side); at image_size "
                f"{self.image_size}: {self.under_16} of {self.objects} under {SMALL_PX} px, "
                f"{self.under_8} under {TINY_PX} px")  # fmt: skip

    def hint(self) -> str | None:
        """What to do about many small objects, or None."""
        if self.grid is None:
            return None
        grid = f"{self.grid[0]}x{self.grid[1]}"
        return (f"{self.under_16} objects are under {SMALL_PX} px at image_size {self.image_size}: tiles bring most "
                f"of them over it (--set tile_grid={grid}; see docs/tiling.md)")  # fmt: skip


def object_sizes(records: Records, image_size: int) -> ObjectSizes | None:
    """The sizes of `records`' objects at `image_size` (None without objects)."""
    if not records.num_objects:
        return None
    sizes = records.sizes[records.object_image()].astype(np.float64)  # each object's image (width, height)
    wh = (records.boxes[:, 2:] - records.boxes[:, :2]).astype(np.float64)
    share = wh / sizes
    resized = share * image_size  # the box at the model's input (the image squashed to a square)
    side = resized.min(axis=1)
    under_16 = int((side < SMALL_PX).sum())
    grid = None
    if under_16 > MANY * len(side):
        # Tiles of c columns zoom by 0.75 c + 0.25: the fewest that take the COVERED quantile to SMALL_PX.
        needed = SMALL_PX / np.maximum(np.quantile(resized, 1 - COVERED, axis=0), 1e-6)
        grid = tuple(min(MAX_GRID, max(1, math.ceil((z - OVERLAP) / (1 - OVERLAP)))) for z in needed.tolist())
    return ObjectSizes(
        objects=len(side),
        image_size=image_size,
        median_share=float(np.median(share.mean(axis=1))),
        median_box=tuple(float(v) for v in np.median(wh, axis=0)),
        median_image=tuple(float(v) for v in np.median(records.sizes.astype(np.float64), axis=0)),
        under_16=under_16,
        under_8=int((side < TINY_PX).sum()),
        grid=grid if grid != (1, 1) else None,
    )
