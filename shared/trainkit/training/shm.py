"""Is /dev/shm big enough? Docker's default is 64 MB and AzureML's 2 GB; too little fails late and obscurely.

trainkit's loader decodes inside the training process (DALI threads), so one process per node needs
little shared memory. Several processes on a node (distributed training) exchange gradients and
tensors through it: NCCL and gloo keep per-peer buffers there, and run out with "unable to allocate
shared memory" or a bus error mid-epoch. The harness warns at start instead.
"""

from __future__ import annotations

import os

MiB = 1024 * 1024
SINGLE_PROCESS_NEED = 64 * MiB
PER_PROCESS_NEED = 1024 * MiB  # generous for NCCL's channels and gloo's buffers per local process


def shm_bytes(path: str = "/dev/shm") -> int | None:
    """The size of the shared-memory filesystem, or None where there is none (e.g. not Linux)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_frsize * stats.f_blocks


def shm_need(local_processes: int) -> int:
    """Bytes of /dev/shm a node's training processes need."""
    return SINGLE_PROCESS_NEED if local_processes <= 1 else PER_PROCESS_NEED * local_processes


def shm_warning(size: int | None, local_processes: int) -> str | None:
    """A one-line warning naming the fix when `size` is below what `local_processes` processes need."""
    need = shm_need(local_processes)
    if size is None or size >= need:
        return None
    gigabytes = max(1, -(-need // (1024 * MiB)))
    return (
        f"/dev/shm is {size // MiB} MB; {local_processes} training process(es) on this node need about "
        f"{need // MiB} MB: raise it with `docker run --shm-size {gigabytes}g` or `trainkit submit --shm-size "
        f"{gigabytes}g` (AzureML: resources.shm_size)"
    )
