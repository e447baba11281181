"""The one resize of every image the model sees, in training, evaluation and prediction alike.

Bilinear and antialiased, as torchvision's v2 Resize: torch's uint8 kernel on the CPU, the same
filter in float32 on a GPU. No DALI here, so a served model (trainkit.inference) resizes exactly as
the loader did in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_into(chw: torch.Tensor, out: torch.Tensor) -> None:
    """Bilinear, antialiased resize of (1, 3, H, W) uint8 into `out`, as torchvision's v2 Resize does."""
    if chw.device.type == "cpu":
        resize_uint8(chw, out)
    else:  # torch's uint8 kernel exists on the CPU only
        resize_via_float(chw, out)


def resize_uint8(chw: torch.Tensor, out: torch.Tensor) -> None:
    """The CPU resize: torch's uint8 kernel (SIMD, no float copy), channels-last in and out."""
    torch.ops.aten._upsample_bilinear2d_aa.out(chw, list(out.shape[-2:]), False, None, None, out=out)


def resize_via_float(chw: torch.Tensor, out: torch.Tensor) -> None:
    """The GPU resize: the same filter in float32, rounded back to uint8 (tested on the CPU against resize_uint8)."""
    resized = F.interpolate(
        chw.float(), size=list(out.shape[-2:]), mode="bilinear", antialias=True, align_corners=False
    )
    out.copy_(resized.round_().clamp_(0, 255))
