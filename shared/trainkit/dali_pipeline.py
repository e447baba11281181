"""The DALI graph and the source that feeds it: one definition for CPU and GPU, the device a parameter.

The source hands DALI encoded file bytes plus each sample's targets, in the order the loader chose
(seeded shuffle, shard). DALI decodes (nvImageCodec; `mixed` = on the GPU), crops around boxes and
flips, moving the boxes with the pixels. Resizing to the model's size and normalising happen in
torch on the model's device (see loader.py): DALI's CPU resize costs four times its decode here.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from nvidia.dali import fn, pipeline_def, types

log = logging.getLogger(__name__)

# Crop policy of the SSD reference: keep boxes, at least one with this much overlap, or no crop.
CROP_THRESHOLDS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
CROP_ASPECT = [0.5, 2.0]
CROP_SCALE = [0.3, 1.0]


@dataclass(frozen=True)
class Sample:
    """One unit the source hands to DALI (an image, or an object for crops)."""

    position: int  # index into the loader's sample list
    encoded: np.ndarray  # file bytes, uint8
    targets: tuple[np.ndarray, ...]  # per task; see TASK_OUTPUTS


# What the source yields after the encoded bytes, and their DALI types.
TASK_OUTPUTS: dict[str, tuple[tuple[str, types.DALIDataType], ...]] = {
    "detection": (("boxes", types.FLOAT), ("labels", types.INT32)),
    "object_crops": (("anchor", types.FLOAT), ("shape", types.FLOAT), ("labels", types.INT32)),
    "image_labels": (("labels", types.FLOAT),),
}


class BadFile(Exception):
    """A sample's file could not be read; carries the position and the reason."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(reason)
        self.position = position


class BatchSource:
    """A DALI batch source over an ordered list of positions, remembering which batch held what.

    `load(position)` returns the Sample or raises BadFile. With `skip_bad`, unreadable files are
    left out of their batch (and recorded); otherwise the first one stops the epoch, and the
    loader reports it.
    """

    def __init__(self, load: Callable[[int], Sample], batch_size: int, task: str, skip_bad: bool) -> None:
        self._load = load
        self._batch_size = batch_size
        self._task = task
        self._skip_bad = skip_bad
        self._order = np.zeros(0, np.int64)
        self._cursor = 0
        self.pending: deque[np.ndarray] = deque()  # positions of batches handed to DALI, not yet consumed
        self.bad: dict[int, str] = {}
        self.error: BadFile | None = None

    def start(self, order: np.ndarray) -> None:
        """Begin a pass over `order` (positions)."""
        self._order = np.asarray(order, np.int64)
        self._cursor = 0
        self.pending.clear()
        self.error = None

    def unconsumed(self) -> np.ndarray:
        """Positions handed to DALI whose batches the loader has not received yet."""
        return np.concatenate(list(self.pending)) if self.pending else np.zeros(0, np.int64)

    def rewind(self) -> None:
        """Start again at the first batch the loader has not received (after rebuilding the pipeline)."""
        self.start(np.concatenate([self.unconsumed(), self._order[self._cursor :]]))

    def __call__(self) -> tuple[list[np.ndarray], ...]:
        samples: list[Sample] = []
        while not samples:
            if self._cursor >= len(self._order):
                raise StopIteration
            chunk = self._order[self._cursor : self._cursor + self._batch_size]
            self._cursor += len(chunk)
            samples = self._read(chunk)
        self.pending.append(np.array([s.position for s in samples], np.int64))
        columns: list[list[np.ndarray]] = [[s.encoded for s in samples]]
        for j in range(len(TASK_OUTPUTS[self._task])):
            columns.append([s.targets[j] for s in samples])
        columns.append([np.array([s.position], np.int64) for s in samples])
        return tuple(columns)

    def _read(self, chunk: np.ndarray) -> list[Sample]:
        samples = []
        for position in chunk.tolist():
            if position in self.bad:
                continue
            try:
                samples.append(self._load(position))
            except BadFile as bad:
                if not self._skip_bad:
                    self.error = bad
                    raise
                self.bad[position] = str(bad)
                log.warning("skipped: %s", bad)
        return samples


@pipeline_def(enable_conditionals=False)
def loader_pipeline(
    source: BatchSource, task: str, train: bool, decode_device: str, hflip: float, random_crop: bool
) -> tuple:
    """Decode and augment. Outputs: images (HWC uint8, ragged), then per task the targets, then positions."""
    names = [name for name, _ in TASK_OUTPUTS[task]]
    dtypes = [types.UINT8] + [dtype for _, dtype in TASK_OUTPUTS[task]] + [types.INT64]
    encoded, *targets, positions = fn.external_source(source=source, num_outputs=len(dtypes), batch=True, dtype=dtypes)
    named = dict(zip(names, targets, strict=True))
    boxes = named.get("boxes")
    if task == "detection" and train and random_crop:
        anchor, shape, boxes, named["labels"] = fn.random_bbox_crop(
            boxes,
            named["labels"],
            bbox_layout="xyXY",
            thresholds=CROP_THRESHOLDS,
            aspect_ratio=CROP_ASPECT,
            scaling=CROP_SCALE,
            allow_no_crop=True,
            num_attempts=50,
        )
        images = fn.decoders.image_slice(encoded, anchor, shape, device=decode_device, output_type=types.RGB)
    elif task == "object_crops":
        images = fn.decoders.image_slice(
            encoded, named["anchor"], named["shape"], device=decode_device, output_type=types.RGB
        )
    else:
        images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB)
    if train and hflip > 0:
        coin = fn.random.coin_flip(probability=hflip)
        images = fn.flip(images, horizontal=coin)
        if boxes is not None:
            boxes = fn.bb_flip(boxes, ltrb=True, horizontal=coin)
    if boxes is not None:
        return images, boxes, named["labels"], positions
    return images, named["labels"], positions
