"""The class map: class names sorted and numbered, saved with every model so its ids can be read back."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trainkit.atomic import write_json_atomic
from trainkit.errors import UserError

FORMAT_VERSION = 1


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
