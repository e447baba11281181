"""Typed, columnar records of a parsed dataset: one entry per image, objects stored flat."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


def segment_indices(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ranges starts[i] : starts[i] + counts[i], as one index array."""
    counts = np.asarray(counts, np.int64)
    local = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.repeat(np.asarray(starts, np.int64) - local, counts) + np.arange(int(counts.sum()))


def row_of_items(counts: np.ndarray) -> np.ndarray:
    """For items stored flat in row order with `counts` per row: the row of each item."""
    return np.repeat(np.arange(len(counts)), counts)


@dataclass(frozen=True)
class ImageRecord:
    """One image and its objects. Boxes are absolute pixel xyxy in the displayed image."""

    path: str
    image_url: str
    width: int
    height: int
    boxes: np.ndarray  # (k, 4) float32 xmin, ymin, xmax, ymax
    class_ids: np.ndarray  # (k,) int64, index `Records.classes`
    confidences: np.ndarray  # (k,) float32


@dataclass(frozen=True)
class Regions:
    """Crowd regions (COCO's iscrowd, AutoML's isCrowd), per image like Records' objects: never training
    targets, given to the mAP metric as areas where detections count neither right nor wrong."""

    offsets: np.ndarray  # (n + 1,) int64
    boxes: np.ndarray  # (k, 4) float32 pixel xyxy
    class_ids: np.ndarray  # (k,) int64

    def of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image i's regions: (boxes, class ids)."""
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.boxes[start:stop], self.class_ids[start:stop]

    def subset(self, indices: np.ndarray) -> Regions:
        """The given images' regions, in that order."""
        counts = np.diff(self.offsets)[indices]
        pick = segment_indices(self.offsets[indices], counts)
        return Regions(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), self.boxes[pick],
                       self.class_ids[pick])  # fmt: skip

    def remapped(self, lookup: np.ndarray) -> Regions:
        """Class ids through `lookup` (old id -> new id); regions whose class maps to -1 are dropped."""
        ids = lookup[self.class_ids] if len(self.class_ids) else self.class_ids
        keep = ids >= 0
        counts = np.bincount(row_of_items(np.diff(self.offsets))[keep], minlength=len(self.offsets) - 1)
        return Regions(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), self.boxes[keep], ids[keep])

    @staticmethod
    def empty(images: int) -> Regions:
        """No regions for `images` images."""
        return Regions(np.zeros(images + 1, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))


@dataclass(frozen=True)
class Records:
    """All images of a dataset. Image i's objects are rows offsets[i]:offsets[i+1] of the object arrays."""

    paths: np.ndarray  # (n,) object: absolute image paths
    image_urls: np.ndarray  # (n,) object: the label set's image_url, normalised
    sizes: np.ndarray  # (n, 2) int32: width, height
    offsets: np.ndarray  # (n + 1,) int64
    boxes: np.ndarray  # (objects, 4) float32 pixel xyxy
    class_ids: np.ndarray  # (objects,) int64
    confidences: np.ndarray  # (objects,) float32
    classes: tuple[str, ...]  # class_ids index this
    crowd: Regions | None = None  # crowd regions, for evaluation only (None: the label set has none)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_objects(self) -> int:
        """Objects over all images."""
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> ImageRecord:
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        return ImageRecord(
            path=str(self.paths[i]),
            image_url=str(self.image_urls[i]),
            width=int(self.sizes[i, 0]),
            height=int(self.sizes[i, 1]),
            boxes=self.boxes[start:stop],
            class_ids=self.class_ids[start:stop],
            confidences=self.confidences[start:stop],
        )

    def object_image(self) -> np.ndarray:
        """The image index of every object."""
        return row_of_items(np.diff(self.offsets))

    def subset(self, indices: np.ndarray) -> Records:
        """The given images, in the given order."""
        indices = np.asarray(indices, dtype=np.int64)
        counts = np.diff(self.offsets)[indices]
        pick = segment_indices(self.offsets[indices], counts)
        return replace(
            self,
            paths=self.paths[indices],
            image_urls=self.image_urls[indices],
            sizes=self.sizes[indices],
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            boxes=self.boxes[pick],
            class_ids=self.class_ids[pick],
            confidences=self.confidences[pick],
            crowd=self.crowd.subset(indices) if self.crowd is not None else None,
        )

    def with_classes(self, classes: tuple[str, ...]) -> Records:
        """The same records with class ids renumbered to index `classes` (which must hold every used class)."""
        position = {name: i for i, name in enumerate(classes)}
        lookup = np.array([position.get(name, -1) for name in self.classes], dtype=np.int64)
        ids = lookup[self.class_ids] if len(self.class_ids) else self.class_ids
        if (ids < 0).any():
            raise ValueError("with_classes: a used class is missing from the new class list")
        # A crowd region of a class no object has is no class of the model: it goes.
        crowd = self.crowd.remapped(lookup) if self.crowd is not None else None
        return replace(self, class_ids=ids, classes=tuple(classes), crowd=crowd)

    def renamed(self, rename: dict[str, str]) -> Records:
        """The same records with classes renamed (names mapped to one name merge), sorted and renumbered."""
        classes = tuple(sorted({rename.get(name, name) for name in self.classes}))
        position = {name: i for i, name in enumerate(classes)}
        lookup = np.array([position[rename.get(name, name)] for name in self.classes], dtype=np.int64)
        ids = lookup[self.class_ids] if len(self.class_ids) else self.class_ids
        crowd = self.crowd.remapped(lookup) if self.crowd is not None else None
        return replace(self, class_ids=ids, classes=classes, crowd=crowd)

    @staticmethod
    def concat(parts: list[Records]) -> Records:
        """Several record sets as one, in order; class ids renumbered to the sorted union of their classes."""
        if len(parts) == 1:
            return parts[0]
        classes = tuple(sorted({name for part in parts for name in part.classes}))
        parts = [part.with_classes(classes) for part in parts]
        counts = np.concatenate([np.diff(part.offsets) for part in parts])
        return Records(
            paths=np.concatenate([part.paths for part in parts]),
            image_urls=np.concatenate([part.image_urls for part in parts]),
            sizes=np.concatenate([part.sizes for part in parts]).astype(np.int32),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            boxes=np.concatenate([part.boxes for part in parts]).astype(np.float32),
            class_ids=np.concatenate([part.class_ids for part in parts]).astype(np.int64),
            confidences=np.concatenate([part.confidences for part in parts]).astype(np.float32),
            classes=classes,
            crowd=_concat_regions(parts),
        )


def _concat_regions(parts: list[Records]) -> Regions | None:
    if all(part.crowd is None for part in parts):
        return None
    regions = [part.crowd if part.crowd is not None else Regions.empty(len(part)) for part in parts]
    counts = np.concatenate([np.diff(r.offsets) for r in regions])
    return Regions(
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        np.concatenate([r.boxes for r in regions]).astype(np.float32),
        np.concatenate([r.class_ids for r in regions]).astype(np.int64),
    )
