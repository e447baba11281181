"""The error hierarchy: what the user can fix exits 2, what we got wrong exits 1."""

from __future__ import annotations

from typing import Literal

# What to do with a row or file that cannot be used: stop with its error, or leave it out and count it.
BadRowPolicy = Literal["error", "skip"]


class TrainkitError(Exception):
    """Base class for errors trainkit raises on purpose."""


class UserError(TrainkitError):
    """Bad input or configuration: reported as one actionable line, exit code 2."""


class DatasetError(UserError):
    """A label set, image set or row that cannot be used as given."""


class Stopped(BaseException):
    """SIGTERM outside the training loop (start-up, saving): the run stops at once, exit 3.

    A BaseException, as KeyboardInterrupt is, so that no `except Exception` on the way swallows it.
    """
