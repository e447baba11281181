"""A run's outputs, replaced together or not at all.

`run.json`, `class_map.json`, `metrics.json`, `model/` and `model.onnx` describe one model: a run
that dies while writing them (a full disk, a kill) must leave the previous run's set as it was, not
a new `metrics.json` beside an old `model/`. So they are written into a staging folder inside the
output folder (same file system: moving them in is a rename, which needs no space), and `publish`
swaps the whole set in: old files aside, new ones in, old ones removed; a rename that fails puts
the old set back. The staging and set-aside folders end in `.tmp`, so the next run in the folder
removes what a killed run left (see trainkit.training.folder_lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

OUTPUTS = ("run.json", "class_map.json", "metrics.json", "model", "model.onnx")


class StagedOutputs:
    """The staging folder of one run's output set; `path(name)` is where each output is written."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.stage = output_dir / f".outputs.{os.getpid()}.tmp"
        self._aside = output_dir / f".outputs.{os.getpid()}.old.tmp"
        shutil.rmtree(self.stage, ignore_errors=True)
        self.stage.mkdir(parents=True)

    def path(self, name: str) -> Path:
        """Where output `name` (one of OUTPUTS) is staged."""
        if name not in OUTPUTS:
            raise ValueError(f"{name!r} is not one of a run's outputs {OUTPUTS}")
        return self.stage / name

    def publish(self) -> list[str]:
        """Replace the output folder's set with the staged one (outputs not staged are removed: an old
        model.onnx must not stay beside a new model/); returns the names now in place."""
        shutil.rmtree(self._aside, ignore_errors=True)
        self._aside.mkdir()
        set_aside: list[str] = []
        placed: list[str] = []
        try:
            for name in OUTPUTS:
                if _exists(self.output_dir / name):
                    os.rename(self.output_dir / name, self._aside / name)
                    set_aside.append(name)
            for name in OUTPUTS:
                if _exists(self.stage / name):
                    os.rename(self.stage / name, self.output_dir / name)
                    placed.append(name)
        except OSError:
            self._roll_back(placed, set_aside)
            raise
        self.discard()
        shutil.rmtree(self._aside, ignore_errors=True)
        return placed

    def _roll_back(self, placed: list[str], set_aside: list[str]) -> None:
        for name in placed:
            with contextlib.suppress(OSError):
                os.rename(self.output_dir / name, self.stage / name)
        for name in set_aside:
            try:
                os.rename(self._aside / name, self.output_dir / name)
            except OSError as exc:  # should not happen (a rename back within one folder); say where it is
                log.error("could not put %s back (%s); the previous output is in %s", name, exc, self._aside)

    def discard(self) -> None:
        """Remove the staging folder (after publishing, or when the run failed before it)."""
        shutil.rmtree(self.stage, ignore_errors=True)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()
