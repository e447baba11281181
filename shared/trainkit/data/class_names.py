"""Class names as people type them: surrounding spaces never make a class, case is the user's call.

`'circle'`, `'circle '` and `' circle'` are one class, always. `'circle'` and `'Circle'` may be two
classes or one typing slip: by default (`error`) the dataset is not usable and the message names
the spellings and their object counts; `fold-case` merges each group under its most frequent
spelling; `exact` keeps them apart.

A fixed class map (`--class-map`) decides instead: its names and order are the run's classes, a row
naming any other class is a bad row, and under `fold-case` a name matches the map's spelling
whatever its case.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Literal

import numpy as np

from trainkit.data.labels import ParsedLabels, RowIssue
from trainkit.data.records import Records, row_of_items

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


def _map_spelling(fixed: tuple[str, ...], policy: ClassNames) -> dict[str, str]:
    """The key a (stripped) name is looked up by -> the class map's spelling."""
    if policy == "fold-case":
        return {name.casefold(): name for name in fixed}
    return {name: name for name in fixed}


def _key(name: str, policy: ClassNames) -> str:
    return name.strip().casefold() if policy == "fold-case" else name.strip()


def rows_outside_class_map(parsed: ParsedLabels, fixed: tuple[str, ...], policy: ClassNames) -> dict[int, RowIssue]:
    """Row -> issue for each row with an object whose class the fixed class map does not hold."""
    spelling = _map_spelling(fixed, policy)
    unknown = np.array([_key(name, policy) not in spelling for name in parsed.vocab], bool)
    if not unknown.any() or not len(parsed.class_codes):
        return {}
    bad = unknown[parsed.class_codes]
    rows = row_of_items(parsed.counts)[bad]
    names = np.asarray(parsed.vocab, dtype=object)[parsed.class_codes[bad]]
    folded = {name.casefold(): name for name in fixed}
    shown = ", ".join(map(repr, fixed[:5])) + (", ..." if len(fixed) > 5 else "")
    issues: dict[int, RowIssue] = {}
    for row, name in zip(rows.tolist(), names.tolist(), strict=True):
        if row in issues:
            continue
        near = folded.get(name.strip().casefold())
        hint = (f"it differs from {near!r} only in case: pass --class-names fold-case" if near
                else "add it to the --class-map file")  # fmt: skip
        issues[row] = RowIssue(
            "class_not_in_map", "label", f"class {name!r} is not in the class map ({len(fixed)}: {shown}); {hint}"
        )
    return issues


def fixed_renaming(parts: Iterable[Records], fixed: tuple[str, ...], policy: ClassNames) -> dict[str, str]:
    """Old name -> the fixed class map's spelling, for every class of `parts` the map holds (the others
    name no object: rows_outside_class_map left their rows out)."""
    spelling = _map_spelling(fixed, policy)
    return {name: spelling.get(_key(name, policy), name) for records in parts for name in records.classes}
