"""Training checkpoints: one dict, written atomically, the previous one kept until the new one is safe."""

from __future__ import annotations

import io
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainkit.atomic import write_bytes_atomic

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
LAST = "last.pt"
PREVIOUS = "previous.pt"


@dataclass(frozen=True)
class Position:
    """Where training stands: optimiser steps done, and the next (epoch, batch) to read."""

    step: int
    epoch: int
    batch: int


def rng_state() -> dict[str, Any]:
    """Every random generator training touches."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, payload: dict[str, Any]) -> Path:
    """Write `payload` as folder/last.pt; the old last.pt becomes previous.pt only once the new one is whole."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    folder.mkdir(parents=True, exist_ok=True)
    staged = write_bytes_atomic(folder / ".next.pt", buffer.getvalue())
    last = folder / LAST
    if last.exists():
        last.replace(folder / PREVIOUS)
    staged.replace(last)
    return last


def load_latest_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The newest checkpoint in `folder` that loads (last.pt, else previous.pt), or None if there is none."""
    for name in (LAST, ".next.pt", PREVIOUS):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a torn or foreign file: fall back to the one before
            log.warning("checkpoint %s is unreadable (%s); trying an older one", path, exc)
            continue
        if isinstance(data, dict) and data.get("format_version") == FORMAT_VERSION:
            return data
        log.warning("checkpoint %s has an unknown format; trying an older one", path)
    return None


def checkpoint_files(folder: Path) -> list[Path]:
    """The checkpoint files in `folder`, newest first."""
    return [folder / name for name in (LAST, ".next.pt", PREVIOUS) if (folder / name).is_file()]


def has_checkpoints(folder: Path) -> bool:
    """Whether `folder` holds any checkpoint file."""
    return bool(checkpoint_files(folder))
