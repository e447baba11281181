"""Pick the torch device a run uses: `auto` (a GPU when torch sees one), `cpu` or `cuda`."""

from __future__ import annotations

from typing import Literal

import torch

from trainkit.errors import UserError

DeviceChoice = Literal["auto", "cpu", "cuda"]


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """The torch device for `choice`; `cuda` without a visible GPU is a user error."""
    if choice not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(
            "--device cuda but torch sees no GPU; run with --device cpu or check the GPU and driver (nvidia-smi)"
        )
    return torch.device("cuda", local_rank % torch.cuda.device_count())
