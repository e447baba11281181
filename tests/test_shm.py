"""The /dev/shm check the harness runs at start."""

from __future__ import annotations

from trainkit.training.shm import MiB, shm_bytes, shm_warning


def test_shm_warning_names_the_fix_only_when_too_small() -> None:
    assert shm_warning(2048 * MiB, 1) is None and shm_warning(None, 8) is None
    assert shm_warning(64 * MiB, 1) is None  # one process: the loader works in-process (Docker's default is fine)
    warning = shm_warning(64 * MiB, 4)
    assert warning.startswith("/dev/shm is 64 MB; 4 training process(es) on this node need about 4096 MB")
    assert "docker run --shm-size 4g" in warning and "trainkit submit --shm-size 4g" in warning
    assert shm_bytes("/no/such/dir") is None
