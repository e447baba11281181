"""The error hierarchy: what the user can fix exits 2, what we got wrong exits 1."""

from __future__ import annotations


class TrainkitError(Exception):
    """Base class for errors trainkit raises on purpose."""


class UserError(TrainkitError):
    """Bad input or configuration: reported as one actionable line, exit code 2."""


class DatasetError(UserError):
    """A label set, image set or row that cannot be used as given."""
