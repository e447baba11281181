"""The process group of a distributed run: who is rank 0, and the few collectives the harness needs.

Launched by `torchrun` or by AzureML's PyTorch distribution, which both set RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT. NCCL on GPUs, gloo on CPUs. With WORLD_SIZE unset or 1
every method is a no-op, so the single-process path is the same code.

A collective that waits for a rank that died would wait forever; the group's timeout
(TRAINKIT_DDP_TIMEOUT seconds, default 600) turns that into an error, and torchrun also stops the
other ranks when one fails.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from trainkit.errors import UserError

log = logging.getLogger(__name__)


class ProcessGroup:
    """This process's place in the run; a context manager that joins and leaves the group."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world
        self._device = torch.device("cpu")

    @classmethod
    def from_env(cls) -> ProcessGroup:
        """RANK and WORLD_SIZE from the launcher; one process when they are unset."""
        try:
            rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            raise UserError("RANK and WORLD_SIZE must be integers (set by torchrun or AzureML)") from None
        if not 0 <= rank < world:
            raise UserError(f"RANK {rank} is not within WORLD_SIZE {world}")
        return cls(rank, world)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs to MLflow, writes checkpoints and outputs, and registers."""
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        """Join the group (NCCL on CUDA, gloo on CPU)."""
        self._device = device
        if not self.distributed or dist.is_initialized():
            return
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise UserError(f"WORLD_SIZE is {self.world} but {name} is not set: launch with torchrun")
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(seconds=float(os.environ.get("TRAINKIT_DDP_TIMEOUT", "600")))
        dist.init_process_group(backend, rank=self.rank, world_size=self.world, timeout=timeout)
        log.info("rank %d of %d joined the %s process group", self.rank, self.world, backend)

    def stop(self) -> None:
        """Leave the group."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to train with: DistributedDataParallel over `model` when distributed, else `model`."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if self._device.type == "cuda":
            # BatchNorm statistics over the global batch, as one process would compute them (the
            # converted layers keep the same parameters, so the optimiser still holds them).
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[self._device.index])
        return DistributedDataParallel(model)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (every rank must call this at the same point)."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor)
        return {k: float(v) / self.world for k, v in zip(keys, tensor.tolist(), strict=True)}

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any (e.g. one rank got SIGTERM)."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.distributed:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        return self._device if self._device.type == "cuda" else torch.device("cpu")
