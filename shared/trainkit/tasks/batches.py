"""What a batch holds, per task: the types a trainer's `loss` and `predict` receive (re-exported by
trainkit.batch). Images arrive as uint8 (N, 3, S, S) tensors (channels-last memory) on the model's
device. Detection targets follow torchvision: per image a dict of absolute xyxy `boxes` (float32,
in batch pixels) and `labels` (int64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DetectionBatch:
    """Images and torchvision-style targets; `indices` are record indices, `scales` map boxes back.

    A box in the batch equals the record's box times `scales[i]` (x, y) when no crop was applied.
    With tiling (trainkit.geometry.tiles) an image is several inputs, one per window; `windows` says
    which part of the image each input shows (image pixels), so a box maps back as
    box / scales + window's corner. An image's inputs are consecutive, with the same index.
    """

    images: torch.Tensor  # (N, 3, S, S) uint8
    targets: list[dict[str, torch.Tensor]]
    indices: torch.Tensor  # (N,) int64
    scales: torch.Tensor  # (N, 2) float32: output pixels per original pixel (x, y)
    windows: torch.Tensor | None = None  # (N, 4) float32 x0, y0, x1, y1 in image pixels; None: the whole image


@dataclass
class ClassificationBatch:
    """Images and their (N,) int64 class ids."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor  # the samples' units (object indices for object crops)


Batch = DetectionBatch | ClassificationBatch
