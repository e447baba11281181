"""Whole files: writes a reader never sees half done (temp file in the same folder, then rename), and
JSON reads whose failure is one line naming the file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from trainkit.errors import UserError


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; an existing file is replaced only by a complete one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, value: object) -> Path:
    """Write `value` as indented JSON, atomically."""
    return write_bytes_atomic(path, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def read_json(path: str | Path, name: str, error: type[UserError] = UserError, encoding: str = "utf-8") -> object:
    """The JSON value in `path`; `error` (exit 2) beginning with `name` (e.g. "--params FILE") when the file
    cannot be read or is not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding=encoding))
    except OSError as exc:
        raise error(f"{name}: cannot read it ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{name}: not valid JSON ({exc})") from None
