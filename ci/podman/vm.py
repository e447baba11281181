"""The settings ci/*.py need to build and run images with podman on the project's VMs, and a local registry.

These VMs have no Docker engine: setup.sh installs podman (and skopeo, the registry) and imports an
offline Debian base; runc (beside this file) is the OCI runtime wrapper they need. The Dockerfiles
know nothing of either. Standard library only, like the rest of ci/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


def environment() -> dict[str, str]:
    """This process's environment plus the podman settings ci/publish.py and ci/images.py read."""
    base = subprocess.run([str(HERE / "setup.sh")], check=True, capture_output=True, text=True).stdout.strip()
    return {
        **os.environ,
        "TRAINKIT_BASE_IMAGE": base,
        "TRAINKIT_BUILD_FLAGS": "--isolation chroot --network host --format docker",
        "TRAINKIT_ENGINE_FLAGS": f"--runtime {HERE / 'runc'}",
        # These VMs reach package registries only, not download.pytorch.org: trainer images bake no
        # weights here, and tests that run one from its defaults train from scratch (`--set weights=`).
        "TRAINKIT_WEIGHTS": os.environ.get("TRAINKIT_WEIGHTS", ""),
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, server: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Return once `server` accepts connections on 127.0.0.1:`port`; RuntimeError if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                reason = log.read_text()[-2000:] if log and log.is_file() else f"exit code {server.poll()}"
                raise RuntimeError(f"{server.args[0]} did not start on port {port}: {reason}") from None
            time.sleep(0.2)


@contextmanager
def local_registry(folder: Path, htpasswd: Path | None = None) -> Iterator[str]:
    """A distribution registry (Debian's docker-registry) on a free 127.0.0.1 port; yields its address.

    It stores under `folder`/store and logs to `folder`/registry.log; with `htpasswd` (bcrypt) it
    demands a password. Stopped, and its storage deleted, on exit.
    """
    port = free_port()
    auth = f"auth:\n  htpasswd:\n    realm: trainkit-test\n    path: {htpasswd}\n" if htpasswd else ""
    (folder / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {folder / 'store'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    with (folder / "registry.log").open("w") as log:
        server = subprocess.Popen(["docker-registry", "serve", str(folder / "config.yml")], stdout=log, stderr=log)
    try:
        wait_for_port(port, server, 60, folder / "registry.log")
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder / "store", ignore_errors=True)
