"""Which part of the data this process reads when several processes train together."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """Process `index` of `count`: it reads every count-th sample of an epoch, starting at `index`."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is not in [0, {self.count})")


def current_shard() -> Shard:
    """This process's shard: torch.distributed's rank and world size, else RANK / WORLD_SIZE, else one shard."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def local_rank() -> int:
    """The GPU index of this process on its machine (torchrun and AzureML set LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_processes() -> int:
    """Training processes on this machine, as torchrun and AzureML tell (LOCAL_WORLD_SIZE); 1 otherwise."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, which container CPU sets narrow), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
