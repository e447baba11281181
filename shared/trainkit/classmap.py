"""The class map: class names sorted and numbered, saved with every model so its ids can be read back."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trainkit.atomic import read_json, write_json_atomic
from trainkit.errors import UserError

FORMAT_VERSION = 1
CLASS_MAP_FILE = "class_map.json"


@dataclass(frozen=True)
class ClassMap:
    """Class names in id order: id i is `names[i]`. Sorted, so the same classes always get the same ids."""

    names: tuple[str, ...]

    @classmethod
    def from_names(cls, names: Iterable[str]) -> ClassMap:
        """The class map of a set of names (duplicates collapse)."""
        return cls(tuple(sorted(set(names))))

    def __len__(self) -> int:
        return len(self.names)

    def id_of(self) -> dict[str, int]:
        """name -> id."""
        return {name: i for i, name in enumerate(self.names)}

    def to_json(self) -> dict:
        """The saved form."""
        return {"format_version": FORMAT_VERSION, "classes": list(self.names)}

    def save(self, path: str | Path) -> Path:
        """Write the class map as JSON, atomically."""
        return write_json_atomic(path, self.to_json())

    @classmethod
    def read_fixed(cls, path: str | Path) -> ClassMap:
        """The classes a user fixes for a run (`--class-map`), in their order: a JSON list of names,
        a {name: id} object with ids 0..n-1, trainkit's saved class map, or a run's output or model
        folder that holds one (so a fine-tuning run keeps the earlier run's class ids)."""
        path = Path(path)
        if path.is_dir():
            found = [p for p in (path / CLASS_MAP_FILE, path / "model" / "artifacts" / CLASS_MAP_FILE,
                                 path / "artifacts" / CLASS_MAP_FILE) if p.is_file()]  # fmt: skip
            if not found:
                raise UserError(f"--class-map {path}: the folder holds no {CLASS_MAP_FILE}; pass the file itself")
            path = found[0]
        data = read_json(path, f"--class-map {path}")
        if isinstance(data, dict) and "classes" in data and "format_version" in data:
            data = data["classes"]
        if isinstance(data, dict):
            ids = sorted(data.values(), key=lambda v: (not isinstance(v, int), v if isinstance(v, int) else 0))
            if any(isinstance(v, bool) or not isinstance(v, int) for v in ids) or ids != list(range(len(ids))):
                raise UserError(f"--class-map {path}: the ids must be the integers 0 to {len(data) - 1}, each once")
            data = sorted(data, key=data.__getitem__)
        if not isinstance(data, list) or not data:
            raise UserError(f"--class-map {path}: expected a JSON list of class names or a {{name: id}} object")
        bad = [name for name in data if not isinstance(name, str) or not name.strip()]
        if bad:
            raise UserError(f"--class-map {path}: class names must be non-empty strings, got {bad[0]!r}")
        names = [name.strip() for name in data]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise UserError(f"--class-map {path}: {', '.join(map(repr, twice))} listed more than once")
        return cls(tuple(names))

    @classmethod
    def load(cls, path: str | Path) -> ClassMap:
        """Read a class map written by `save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            names = data["classes"]
            if data.get("format_version") != FORMAT_VERSION or not all(isinstance(n, str) for n in names):
                raise ValueError("unexpected content")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path}: not a trainkit class map ({exc})") from None
        return cls(tuple(names))
