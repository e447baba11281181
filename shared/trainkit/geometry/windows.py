"""Random augmentation decided per sample in numpy, from (seed, epoch, position) alone.

Deciding crops and flips here rather than with DALI's random operators makes a sample's
augmentation independent of threads, device and prefetching, so a run resumed at any batch sees
exactly what an uninterrupted run would have seen, on the CPU and on the GPU alike. DALI then only
decodes the chosen window and flips it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainkit.geometry.boxes import box_iou

# The crop policy of the SSD reference (as DALI's random_bbox_crop and torchvision's RandomIoUCrop):
# no crop, or a window that overlaps some box by at least one of these IoUs.
CROP_MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)
CROP_SCALE = (0.3, 1.0)
CROP_ASPECT = (0.5, 2.0)
CROP_ATTEMPTS = 50


@dataclass(frozen=True)
class Window:
    """A pixel window of an image (the region decoded) and whether it is mirrored."""

    x0: int
    y0: int
    width: int
    height: int
    flip: bool = False

    def xyxy(self) -> np.ndarray:
        """(1, 4) float64: the window's pixel corners, as one row of `windows` below."""
        return np.array([[self.x0, self.y0, self.x0 + self.width, self.y0 + self.height]], np.float64)


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The generator of one sample's augmentation."""
    return np.random.default_rng([seed, epoch, position])


def full_window(width: int, height: int, flip: bool = False) -> Window:
    """The whole image."""
    return Window(0, 0, int(width), int(height), flip)


def box_window(box: np.ndarray, width: int, height: int, flip: bool = False) -> Window:
    """The pixel window around an xyxy pixel box, at least one pixel each way."""
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    x0, y0 = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
    return Window(x0, y0, max(1, min(x1, width) - x0), max(1, min(y1, height) - y0), flip)


def sample_crop_window(rng: np.random.Generator, boxes: np.ndarray, width: int, height: int) -> Window:
    """An SSD-style random crop of a `width` x `height` image with pixel xyxy `boxes`.

    All attempts are drawn and tested at once, and the first that passes wins: the same policy as
    trying them one by one, at a fraction of the cost (this runs once per sample, holding the GIL,
    in the thread that feeds DALI).
    """
    choice = int(rng.integers(len(CROP_MIN_IOUS) + 1))
    if choice == 0:
        return full_window(width, height)
    min_iou = CROP_MIN_IOUS[choice - 1]
    scale = rng.uniform(*CROP_SCALE, CROP_ATTEMPTS)
    root_aspect = np.sqrt(rng.uniform(*CROP_ASPECT, CROP_ATTEMPTS))
    w = np.rint(width * scale * root_aspect)
    h = np.rint(height * scale / root_aspect)
    fits = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
    x0 = np.floor(rng.random(CROP_ATTEMPTS) * (width - w + 1))
    y0 = np.floor(rng.random(CROP_ATTEMPTS) * (height - h + 1))
    windows = np.stack([x0, y0, x0 + w, y0 + h], axis=1)  # (attempts, 4) xyxy
    if len(boxes):
        fits &= _centres_inside(boxes, windows).any(axis=1) & (box_iou(windows, boxes).max(axis=1) >= min_iou)
    passed = np.flatnonzero(fits)
    if not len(passed):
        return full_window(width, height)
    i = passed[0]
    return Window(int(x0[i]), int(y0[i]), int(w[i]), int(h[i]))


def boxes_in_window(boxes: np.ndarray, labels: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (pixel xyxy) as seen in the window, relative to it ([0, 1] xyxy), mirrored if it is flipped.

    Boxes whose centre falls outside the window are dropped with their labels; the rest are clipped.
    """
    keep = _centres_inside(boxes, window.xyxy())[0]
    return relative_to(boxes[keep], window), labels[keep]


def relative_to(boxes: np.ndarray, window: Window) -> np.ndarray:
    """Pixel xyxy boxes relative to the window ([0, 1] xyxy, clipped), mirrored if it is flipped."""
    origin = np.array([window.x0, window.y0, window.x0, window.y0], np.float64)
    extent = np.array([window.width, window.height, window.width, window.height], np.float64)
    rel = np.clip((boxes - origin) / extent, 0.0, 1.0)
    if window.flip:
        rel = np.stack([1.0 - rel[:, 2], rel[:, 1], 1.0 - rel[:, 0], rel[:, 3]], axis=1)
    return rel.astype(np.float32).reshape(-1, 4)


def _centres_inside(boxes: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """(windows, boxes) bool: the box's centre lies in the window (windows as (n, 4) xyxy)."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    x0, y0, x1, y1 = (windows[:, k : k + 1] for k in range(4))
    return (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
