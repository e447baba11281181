"""The `trainkit` command run inside the benchmark's own process.

A benchmark that trains and evaluates a dozen times would otherwise pay a fresh interpreter and
torch import (several seconds on these CPUs) for each command; the work measured is the same.
"""

from __future__ import annotations

import contextlib
import io
import os

# Each run keeps its own MLflow store in its output folder; no trainer is preset from the environment.
os.environ.update({"MLFLOW_TRACKING_URI": "", "TRAINKIT_TRAINER": ""})


def trainkit(*args: str) -> str:
    """Run `trainkit ARGS` and return what it printed (stdout and log); a failure exits the benchmark
    with the command's last lines."""
    from trainkit.cli import main

    printed = io.StringIO()
    with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
        code = main(list(args))
    if code != 0:
        raise SystemExit(f"trainkit {args[0]} exited {code}:\n{printed.getvalue()[-3000:]}")
    return printed.getvalue()
