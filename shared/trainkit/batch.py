"""What a batch holds, and how it is asked for: the loader's side of the trainer interface.

A trainer receives the batches its task (trainkit.tasks) makes, `DetectionBatch` or
`ClassificationBatch`, and says how it wants them made with a `LoaderConfig`; it never needs the
loader itself (nor DALI) to know either. Images arrive as uint8 (N, 3, S, S) tensors (channels-last
memory) on the model's device; `to_float` normalises them there. Detection targets follow
torchvision: per image a dict of absolute xyxy `boxes` (float32, in batch pixels) and `labels` (int64).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from trainkit.errors import BadRowPolicy
from trainkit.tasks import Detection, Task
from trainkit.tasks.batches import Batch, ClassificationBatch, DetectionBatch

if TYPE_CHECKING:
    from trainkit.params import TileSpec

__all__ = ["Batch", "BatchLoader", "ClassificationBatch", "DetectionBatch", "LoaderConfig", "to_float"]


@dataclass(frozen=True)
class LoaderConfig:
    """How batches are made. `image_size` is the square side the model sees."""

    batch_size: int = 8
    image_size: int = 512
    train: bool = True
    task: Task = field(default_factory=Detection)  # what a sample is and carries (trainkit.tasks)
    hflip: float = 0.5
    random_crop: bool = True
    seed: int = 0
    tiles: TileSpec | None = None  # detection: cut images into windows (trainkit.geometry.tiles)
    num_threads: int | None = None
    prefetch: int = 2
    on_bad_row: BadRowPolicy = "error"


class BatchLoader(Protocol):
    """What evaluation needs of a loader: one epoch of batches per iteration, on `device`, of the
    `records` it was made for, as `config` says."""

    device: torch.device
    config: LoaderConfig
    records: Any  # trainkit.data.records.Records

    def __iter__(self) -> Iterator[Batch]: ...


def to_float(
    images: torch.Tensor, mean: tuple[float, ...] = (0.0,) * 3, std: tuple[float, ...] = (1.0,) * 3
) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1], then (x - mean) / std, on the images' device."""
    out = images.float().div_(255.0)
    if any(mean) or any(s != 1.0 for s in std):
        m = torch.tensor(mean, device=out.device).view(1, -1, 1, 1)
        s = torch.tensor(std, device=out.device).view(1, -1, 1, 1)
        out = out.sub_(m).div_(s)
    return out
