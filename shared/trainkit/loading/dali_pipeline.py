"""The DALI graph and the source that feeds it: one definition for CPU and GPU, the device a parameter.

The source hands DALI each sample's encoded file bytes, the pixel window to decode, whether to
mirror it, and the sample's targets, in the order the loader chose (seeded shuffle, shard). The
window, flip and boxes are decided in numpy by `augment` from (seed, epoch, position), so DALI's
one job is decoding the window (nvImageCodec; `mixed` = on the GPU). Resizing, mirroring and
normalising happen in torch on the model's device (see loader.py). Measured on the CPU for a
640x480 JPEG: decode 1.6 ms, DALI's resize to 512x512 4-5 ms and its flip 0.8 ms, against torch's
0.6 ms resize and 0.1 ms flip of the smaller, resized image.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from nvidia.dali import fn, pipeline_def, types

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One unit the source hands to DALI (an image, or an object for crops)."""

    position: int  # index into the loader's sample list
    encoded: np.ndarray  # file bytes, uint8
    anchor: np.ndarray  # (2,) float32: x, y of the window to decode, in pixels
    shape: np.ndarray  # (2,) float32: width, height of the window
    flip: np.ndarray  # () int32: 1 to mirror horizontally
    window: np.ndarray  # (4,) float32: x0, y0, x1, y1 of the window in the image's own pixels (before any reduction)
    targets: tuple[np.ndarray, ...]  # what the task's `sample` says, of its `target_dtypes`


# The numpy types a task's targets may have, as DALI names them: targets travel through DALI untouched.
DALI_TYPES = {"float32": types.FLOAT, "int32": types.INT32, "int64": types.INT64, "uint8": types.UINT8}


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

    def __init__(self, load: Callable[[int], Sample], batch_size: int, targets: int, skip_bad: bool) -> None:
        self._load = load
        self._batch_size = batch_size
        self._targets = targets  # arrays per sample
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
        columns: list[list[np.ndarray]] = [[s.encoded for s in samples], [s.anchor for s in samples]]
        columns += [[s.shape for s in samples], [s.flip for s in samples], [s.window for s in samples]]
        columns += [[s.targets[j] for s in samples] for j in range(self._targets)]
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
def loader_pipeline(source: BatchSource, target_dtypes: tuple[str, ...], decode_device: str) -> tuple:
    """Decode each sample's window. Outputs: images (HWC uint8), flips, windows, targets, positions."""
    targets = [DALI_TYPES[name] for name in target_dtypes]
    dtypes = [types.UINT8, types.FLOAT, types.FLOAT, types.INT32, types.FLOAT, *targets, types.INT64]
    encoded, anchor, shape, flip, window, *rest = fn.external_source(
        source=source, num_outputs=len(dtypes), batch=True, dtype=dtypes
    )
    images = fn.decoders.image_slice(
        encoded,
        anchor,
        shape,
        normalized_anchor=False,
        normalized_shape=False,
        device=decode_device,
        output_type=types.RGB,
    )
    return (images, flip, window, *rest)
