"""One run per output folder: a second run is refused naming the first; a dead run's lock and leftovers go."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from trainkit.data.demo import DemoDataset
from trainkit.errors import UserError
from trainkit.training.folder_lock import LOCK_FILE, hold_folder

SKELETON = Path(__file__).resolve().parents[1] / "trainers" / "skeleton"


def test_a_held_folder_is_refused_naming_its_holder(tmp_path: Path) -> None:
    refused = pytest.raises(UserError, match=rf"in use by another trainkit run \(pid {os.getpid()} on ")
    with hold_folder(tmp_path), refused, hold_folder(tmp_path):
        pass
    with hold_folder(tmp_path):  # released at the end: the next run gets it
        pass
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_a_second_train_on_the_same_output_dir_exits_2(run_cli, demo: DemoDataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with hold_folder(out):
        result = run_cli("train", "--trainer", SKELETON, "--imageset", demo.imageset_studio, "--labelset",
                         demo.labels_csv, "--datastore-name", "", "--output-dir", out, "--device", "cpu")  # fmt: skip
    last = result.err.strip().splitlines()[-1]
    assert result.code == 2 and f"{out} is in use by another trainkit run (pid {os.getpid()}" in last, result.err
    assert not (out / "run.json").exists()


def test_a_dead_runs_lock_and_leftovers_are_taken_over(tmp_path: Path, caplog) -> None:
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": socket.gethostname(), "since": 0}))
    (tmp_path / ".model.abc12" / "data").mkdir(parents=True)
    (tmp_path / ".metrics.json.x1.tmp").write_bytes(b"half")
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for name in ("last.pt", ".next.pt", "..next.pt.q9.tmp"):
        (checkpoints / name).write_bytes(b"x")
    with caplog.at_level("INFO", logger="trainkit.training.folder_lock"), hold_folder(tmp_path):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid()
    assert "taking over from a run that did not finish (pid 999999 on" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, "checkpoints"]
    assert sorted(p.name for p in checkpoints.iterdir()) == [".next.pt", "last.pt"]  # the staged checkpoint stays
