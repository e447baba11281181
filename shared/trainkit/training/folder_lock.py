"""One run per output folder: an exclusive lock, held for the run's life, on each folder it writes.

Two runs writing one folder would leave one run's model beside the other's metrics and checkpoints.
The lock is `flock` on FOLDER/.trainkit.lock, which the kernel releases when its holder dies in
any way, so a killed run never blocks the next; the file names the holder (pid, host, start) for
the message the second run gets. A run that finds a holder's name but no lock took over from one
that did not finish: it says so and removes what such a run leaves behind (atomic writes' temp
files, model staging folders).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from trainkit.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = ".trainkit.lock"
# What an interrupted run leaves: trainkit.atomic's temp files, and inference.package's staging folders.
LEFTOVERS = (".*.tmp", ".model.*")


@contextlib.contextmanager
def hold_folder(folder: Path) -> Iterator[None]:
    """Hold `folder` for one run; a UserError naming the holder when another run holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = path.open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{folder} is in use by another trainkit run ({_holder(path) or 'holder unknown'}); wait for it to "
                "finish, or give this run another --output-dir / --checkpoint-dir"
            ) from None
        except OSError as exc:  # a filesystem without locks, as some network mounts are
            log.warning("cannot lock %s (%s): make sure no other run writes there", folder, exc.strerror or exc)
            yield
            return
        previous = _holder(path)
        if previous:
            log.warning("%s: taking over from a run that did not finish (%s)", folder, previous)
        _remove_leftovers(folder)
        _write(handle, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        try:
            yield
        finally:
            _write(handle, "")  # a clean end: the next run finds no holder to take over from
    finally:
        handle.close()  # releases the lock


def _write(handle, text: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()


def _holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return ""
    if not isinstance(holder, dict):
        return ""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} since {since}"


def _remove_leftovers(folder: Path) -> None:
    found = [p for pattern in LEFTOVERS for where in (folder, folder / "checkpoints") for p in where.glob(pattern)]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if found:
        log.info("%s: removed %d files an interrupted run left: %s", folder, len(found),
                 ", ".join(p.name for p in found[:5]))  # fmt: skip
