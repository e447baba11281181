"""The fixed contract every trainkit image honours: exit codes and environment variables.

Defined once here; the CLI reads these names and `trainkit contract` renders them for docs/command.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the `trainkit` command."""

    OK = 0
    INTERNAL_ERROR = 1
    BAD_INPUT = 2
    PREEMPTED = 3
    INTERRUPTED = 130


EXIT_CODE_HELP: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.INTERNAL_ERROR: "internal error (a bug or an environment fault; rerun with --debug for the traceback)",
    ExitCode.BAD_INPUT: "bad input: dataset, arguments or configuration; the one-line message says what to fix",
    ExitCode.PREEMPTED: "stopped by SIGTERM (preemption, `docker stop`) after a checkpoint; rerun with `--resume auto`",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C",
}


@dataclass(frozen=True)
class EnvVar:
    """An environment variable the contract reads, and the option it backs."""

    name: str
    option: str
    help: str


ENV_DATASTORE_NAME = EnvVar(
    "DATASTORE_NAME",
    "--datastore-name",
    "folder between the image-set mount and each `image_url`; empty for ML-studio datasets; unset: trainkit finds "
    "whether the images are at the mount root or under exactly one sub-folder, and says which",
)
ENV_OUTPUT_DIR = EnvVar("TRAINKIT_OUTPUT_DIR", "--output-dir", "where `train` writes its outputs (default `./outputs`)")
ENV_TRAINER = EnvVar("TRAINKIT_TRAINER", "--trainer", "the trainer an image runs; set by each trainer image")

ENV_DATA_REPORT = EnvVar(
    "TRAINKIT_DATA_REPORT", "--data-report",
    "`off`: `train` writes no dataset report (its checks read every image once, about 1 ms each)",
)  # fmt: skip

ENV_LABEL_ISSUES = EnvVar(
    "TRAINKIT_LABEL_ISSUES", "--label-issues",
    "`off`: `train` does not rank the validation labels the model disagrees with (one more pass over them)",
)  # fmt: skip

ENV_VARS: tuple[EnvVar, ...] = (ENV_DATASTORE_NAME, ENV_OUTPUT_DIR, ENV_TRAINER, ENV_DATA_REPORT, ENV_LABEL_ISSUES)
