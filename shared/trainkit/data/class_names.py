"""Class names as people type them: surrounding spaces never make a class, case is the user's call.

`'circle'`, `'circle '` and `' circle'` are one class, always. `'circle'` and `'Circle'` may be two
classes or one typing slip: by default (`error`) the dataset is not usable and the message names
the spellings and their object counts; `fold-case` merges each group under its most frequent
spelling; `exact` keeps them apart.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Literal

import numpy as np

from trainkit.data.records import Records

ClassNames = Literal["error", "exact", "fold-case"]
CLASS_NAMES: tuple[str, ...] = ("error", "exact", "fold-case")


def class_renaming(parts: Iterable[Records], policy: ClassNames) -> tuple[dict[str, str], list[str], str | None]:
    """(old name -> new name for every class of `parts`, notes on what was merged, the problem that
    makes the dataset unusable under `policy` or None)."""
    counts: Counter[str] = Counter()
    for records in parts:
        ids = np.bincount(records.class_ids, minlength=len(records.classes)) if len(records.class_ids) else []
        for name, n in zip(records.classes, ids, strict=False):
            counts[name] += int(n)
        counts.update({name: 0 for name in records.classes})
    stripped = {name: name.strip() for name in counts}
    notes = [f"class {old!r} read as {new!r}" for old, new in sorted(stripped.items()) if old != new]
    objects: Counter[str] = Counter()
    for old, new in stripped.items():
        objects[new] += counts[old]
    groups: dict[str, list[str]] = defaultdict(list)
    for name in objects:
        groups[name.casefold()].append(name)
    clashes = [sorted(g, key=lambda n: (-objects[n], n)) for g in groups.values() if len(g) > 1]
    rename = dict(stripped)
    if not clashes or policy == "exact":
        return rename, notes, None
    spelled = "; ".join(", ".join(f"{n!r} ({objects[n]} objects)" for n in group) for group in sorted(clashes))
    if policy == "error":
        problem = (f"class names that differ only in case: {spelled}; pass --class-names fold-case to merge each "
                   "group under its most frequent spelling, or --class-names exact to keep them apart")  # fmt: skip
        return rename, notes, problem
    chosen = {name: group[0] for group in clashes for name in group}
    notes += [f"classes {', '.join(map(repr, group))} merged as {group[0]!r}" for group in sorted(clashes)]
    return {old: chosen.get(new, new) for old, new in rename.items()}, notes, None
