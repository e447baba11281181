"""Parse the `label` and `label_confidence` columns into flat per-object arrays.

Cells in the exact shape pandas `to_csv` writes for plain class names (single-quoted strings
without quotes, braces or backslashes; Python numbers) are parsed column-wise by Arrow's regex
kernels, with no Python per row. Every other cell goes through `literal.parse_literal` one row at
a time, which is slower but accepts every literal the API can write and explains what is wrong.
Both paths produce the same numbers: the fast path only takes cells whose meaning is unambiguous.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trainkit.data.literal import DEFAULT_MAX_CELL_CHARS, LiteralError, parse_literal
from trainkit.data.records import row_of_items, segment_indices

COORD_KEYS = ("bottomX", "topX", "bottomY", "topY")
# Every coordinate within [0, this] means normalised corners (tools write a hair past 1: 1.0004).
RELATIVE_LIMIT = 1.05
CLASS_KEYS = ("type", "label")

# The fast path's grammar: exactly what `repr(list_of_dicts)` prints when no string needs escaping.
_STR = r"'[^'\"\\{}\x00-\x1f]*'"
_NUM = r"-?(?:\d+(?:\.\d*)?(?:e[+-]?\d+)?|nan|inf)"
_VAL = rf"(?:{_STR}|{_NUM}|None|True|False)"
_KEY = r"'[A-Za-z_][A-Za-z0-9_]*'"
_DICT = rf"\{{{_KEY}: {_VAL}(?:, {_KEY}: {_VAL})*\}}"
_LABEL_CELL = rf"^\[(?:{_DICT}(?:, {_DICT})*)?\]$"
# A split-off dict (its outer braces only at the ends of the list) in the API's own key order.
_CANONICAL_DICT = (
    rf"^\{{?'(?:type|label)': '(?P<name>[^']+)', 'bottomX': (?P<bx>{_NUM}), 'topX': (?P<tx>{_NUM}), "
    rf"'bottomY': (?P<by>{_NUM}), 'topY': (?P<ty>{_NUM})\}}?$"
)
_NUMBER_CELL = rf"^\[(?:{_NUM}(?:, {_NUM})*)?\]$"


@dataclass(frozen=True)
class RowIssue:
    """Why one row cannot be used: a reason code (for counting), the field, and a detail."""

    reason: str
    field: str
    detail: str


class RowProblem(Exception):
    """Raised inside the per-row path; carries the RowIssue."""

    def __init__(self, reason: str, field: str, detail: str) -> None:
        super().__init__(detail)
        self.issue = RowIssue(reason, field, detail)


@dataclass(frozen=True)
class ParsedLabels:
    """Objects of every row, flattened in row order; rows with an issue hold no objects."""

    counts: np.ndarray  # (rows,) int64: objects per row
    class_codes: np.ndarray  # (objects,) int32, indexes `vocab`
    vocab: tuple[str, ...]  # class names in first-seen order (not the class map)
    boxes: np.ndarray  # (objects, 4) float64: xmin, ymin, xmax, ymax in the label set's units
    confidences: np.ndarray  # (objects,) float64; 1.0 where the row gives none
    issues: dict[int, RowIssue]  # row index -> why the row is unusable
    crowd: np.ndarray | None = None  # (objects,) bool: COCO's iscrowd / AutoML's isCrowd regions (None: none)

    @property
    def offsets(self) -> np.ndarray:
        """Start of each row's objects, plus the total at the end."""
        return np.concatenate([[0], np.cumsum(self.counts)])

    @property
    def class_names(self) -> np.ndarray:
        """The class name of every object (object array of str)."""
        return np.asarray(self.vocab, dtype=object)[self.class_codes] if len(self.vocab) else np.array([], object)


@dataclass(frozen=True)
class DeclaredClasses:
    """The classes a format declares (YOLO's `names`, COCO's `categories`), in the order of their ids,
    whether or not any object names them: the run's class map unless `--class-map` says otherwise."""

    names: tuple[str, ...]
    ids: tuple[int, ...]  # the format's own ids: YOLO's 0..n-1, COCO's category ids (sorted)
    where: str  # the file that declares them, for messages


@dataclass(frozen=True)
class OrphanLabels:
    """Label files no image of the set belongs to (a misnamed image, another extension): their objects
    are lost to training, so `validate` names them."""

    files: tuple[str, ...]
    objects: int


def parse_labels(
    label: pa.Array | pa.ChunkedArray,
    confidence: pa.Array | pa.ChunkedArray | None = None,
    max_cell_chars: int = DEFAULT_MAX_CELL_CHARS,
) -> ParsedLabels:
    """Parse a label column (and optionally its confidence column) into ParsedLabels."""
    label = _combine(label)
    n = len(label)
    objects = _parse_label_column(label, max_cell_chars)
    conf = _parse_confidence_column(_combine(confidence), max_cell_chars) if confidence is not None else None

    issues = dict(objects.issues)
    if conf is not None:
        for row, issue in conf.issues.items():
            issues.setdefault(row, issue)
        mismatch = conf.given & (conf.counts != objects.counts)
        for row in np.flatnonzero(mismatch):
            row = int(row)
            if row not in issues:
                issues[row] = RowIssue(
                    "confidence_mismatch",
                    "label_confidence",
                    f"label_confidence has {conf.counts[row]} values but label has {objects.counts[row]} objects",
                )
    valid = np.ones(n, bool)
    if issues:
        valid[np.fromiter(issues.keys(), np.int64, len(issues))] = False

    obj_row = row_of_items(objects.counts)
    confidences = np.ones(len(obj_row), np.float64)
    if conf is not None:
        use = valid & conf.given
        confidences[use[obj_row]] = conf.values[use[row_of_items(conf.counts)]]
    keep = valid[obj_row]
    raw = objects.coords[keep]
    boxes = np.stack(
        [
            np.minimum(raw[:, 0], raw[:, 1]),
            np.minimum(raw[:, 2], raw[:, 3]),
            np.maximum(raw[:, 0], raw[:, 1]),
            np.maximum(raw[:, 2], raw[:, 3]),
        ],
        axis=1,
    ).reshape(-1, 4)
    return ParsedLabels(
        counts=np.where(valid, objects.counts, 0).astype(np.int64),
        class_codes=objects.codes[keep],
        vocab=objects.vocab,
        boxes=boxes,
        confidences=confidences[keep],
        issues=issues,
    )


@dataclass(frozen=True)
class _LabelObjects:
    counts: np.ndarray
    codes: np.ndarray
    vocab: tuple[str, ...]
    coords: np.ndarray  # (objects, 4) in key order bottomX, topX, bottomY, topY
    issues: dict[int, RowIssue]


@dataclass(frozen=True)
class _NumberLists:
    given: np.ndarray  # (rows,) bool: the row has a list
    counts: np.ndarray  # (rows,) int64
    values: np.ndarray  # (sum(counts),) float64
    issues: dict[int, RowIssue]


def _combine(column: pa.Array | pa.ChunkedArray | None) -> pa.Array | None:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    return column


def _is_text(column: pa.Array) -> bool:
    return pa.types.is_string(column.type) or pa.types.is_large_string(column.type)


def _fast_rows(column: pa.Array, pattern: str, max_chars: int) -> np.ndarray:
    ok = pc.and_(pc.match_substring_regex(column, pattern), pc.less_equal(pc.binary_length(column), max_chars))
    return np.flatnonzero(pc.fill_null(ok, False).to_numpy(zero_copy_only=False))


def _to_float(values: pa.Array) -> np.ndarray:
    """Strings matched by _NUM -> float64, null -> nan."""
    return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _split_lists(cells: pa.Array, separator: str) -> tuple[np.ndarray, pa.Array]:
    """Strip the brackets of each cell and split it: (items per cell, all items flattened)."""
    inner = pc.utf8_slice_codeunits(cells, 1, -1)
    nonempty = np.flatnonzero(pc.not_equal(inner, "").to_numpy(zero_copy_only=False))
    counts = np.zeros(len(cells), np.int64)
    parts = pc.split_pattern(inner.take(nonempty), separator)
    counts[nonempty] = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    return counts, pc.list_flatten(parts)


def _parse_label_column(column: pa.Array, max_chars: int) -> _LabelObjects:
    n = len(column)
    fast = np.zeros(0, np.int64)
    fast_counts = np.zeros(0, np.int64)
    fast_names = pa.array([], pa.string())
    fast_coords = np.zeros((0, 4))
    if _is_text(column) and n:
        fast, fast_counts, fast_names, fast_coords = _fast_label_rows(column, max_chars)

    encoded = pc.dictionary_encode(fast_names) if len(fast_names) else None
    vocab: list[str] = encoded.dictionary.to_pylist() if encoded is not None else []
    code_of = {name: i for i, name in enumerate(vocab)}

    slow_mask = np.ones(n, bool)
    slow_mask[fast] = False
    slow_rows = np.flatnonzero(slow_mask)
    slow_objects: dict[int, list[tuple[str, float, float, float, float]]] = {}
    issues: dict[int, RowIssue] = {}
    slow_cells = column.take(slow_rows).to_pylist() if len(slow_rows) else []
    for row, cell in zip(slow_rows.tolist(), slow_cells, strict=True):
        try:
            slow_objects[row] = objects_from_cell(cell, max_chars)
        except RowProblem as problem:
            issues[row] = problem.issue

    counts = np.zeros(n, np.int64)
    counts[fast] = fast_counts
    for row, objs in slow_objects.items():
        counts[row] = len(objs)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    coords = np.empty((int(offsets[-1]), 4), np.float64)
    codes = np.empty(int(offsets[-1]), np.int32)
    if len(fast_coords):
        pos = segment_indices(offsets[fast], fast_counts)
        coords[pos] = fast_coords
        codes[pos] = encoded.indices.to_numpy(zero_copy_only=False)
    for row, objs in slow_objects.items():
        start = int(offsets[row])
        for i, (name, *xy) in enumerate(objs):
            if name not in code_of:
                code_of[name] = len(vocab)
                vocab.append(name)
            codes[start + i] = code_of[name]
            coords[start + i] = xy
    return _LabelObjects(counts, codes, tuple(vocab), coords, issues)


def _fast_label_rows(column: pa.Array, max_chars: int) -> tuple[np.ndarray, np.ndarray, pa.Array, np.ndarray]:
    """Rows the regex kernels can parse: (rows, objects per row, class names, coords)."""
    rows = _fast_rows(column, _LABEL_CELL, max_chars)
    counts, dicts = _split_lists(column.take(rows), "}, {")
    # Most dicts have the API's key order: one regex pass reads all five values.
    canonical = pc.extract_regex(dicts, _CANONICAL_DICT)
    is_canonical = pc.is_valid(canonical).to_numpy(zero_copy_only=False)
    names = pc.struct_field(canonical, [0])
    coords = np.stack([_to_float(pc.struct_field(canonical, [j + 1])) for j in range(4)], axis=1).reshape(-1, 4)
    good = is_canonical & np.isfinite(coords).all(axis=1)
    other = np.flatnonzero(~is_canonical)
    if len(other):
        other_names, other_coords, other_good = _keyed_dicts(dicts.take(other))
        order = np.argsort(np.concatenate([np.flatnonzero(is_canonical), other]), kind="stable")
        names = pa.concat_arrays([names.filter(pa.array(is_canonical)), other_names]).take(order)
        coords[other] = other_coords
        good[other] = other_good

    dict_row = row_of_items(counts)
    keep_row = np.ones(len(rows), bool)
    keep_row[dict_row[~good]] = False
    keep = keep_row[dict_row]
    return rows[keep_row], counts[keep_row], names.filter(pa.array(keep)), coords[keep]


def _keyed_dicts(dicts: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Dicts with other key orders or extra keys: (class names, coords, parsed cleanly)."""
    # Strings on this path hold no quotes or braces, so "'key': " can only be a key.
    good = np.ones(len(dicts), bool)
    coords = np.empty((len(dicts), 4), np.float64)
    for j, key in enumerate(COORD_KEYS):
        good &= pc.count_substring(dicts, f"'{key}': ").to_numpy(zero_copy_only=False) == 1
        found = pc.struct_field(pc.extract_regex(dicts, rf"'{key}': (?P<v>{_NUM})(?:,|\}}|$)"), [0])
        coords[:, j] = _to_float(found)
    good &= np.isfinite(coords).all(axis=1)
    names = []
    for key in CLASS_KEYS:
        times = pc.count_substring(dicts, f"'{key}': ").to_numpy(zero_copy_only=False)
        name = pc.struct_field(pc.extract_regex(dicts, rf"'{key}': '(?P<v>[^']*)'"), [0])
        found = pc.is_valid(name).to_numpy(zero_copy_only=False)
        good &= (times <= 1) & (found == (times == 1))
        names.append(name)
    type_name, label_name = names
    has_type = pc.is_valid(type_name).to_numpy(zero_copy_only=False)
    has_label = pc.is_valid(label_name).to_numpy(zero_copy_only=False)
    agree = pc.fill_null(pc.equal(type_name, label_name), True).to_numpy(zero_copy_only=False)
    name = pc.coalesce(type_name, label_name)
    nonempty = pc.fill_null(pc.not_equal(name, ""), False).to_numpy(zero_copy_only=False)
    good &= (has_type | has_label) & agree & nonempty
    return name, coords, good


def objects_from_cell(
    cell: object, max_chars: int = DEFAULT_MAX_CELL_CHARS
) -> list[tuple[str, float, float, float, float]]:
    """Validate one label cell (text, or an already-parsed list) into (class, bottomX, topX, bottomY, topY).

    Raises RowProblem naming what is wrong and where.
    """
    value = _cell_value(cell, "label", max_chars)
    if value is None:
        raise RowProblem("label_missing", "label", "label is empty; write [] for an image with no objects")
    if not isinstance(value, list):
        raise RowProblem("label_structure", "label", f"label is {_kind(value)}, expected a list of objects")
    objects = []
    for i, obj in enumerate(value, start=1):
        if not isinstance(obj, dict):
            raise RowProblem("label_structure", "label", f"object {i} is {_kind(obj)}, expected a dict")
        objects.append((_class_name(obj, i), *(_coordinate(obj, key, i) for key in COORD_KEYS)))
    return objects


def _cell_value(cell: object, field: str, max_chars: int) -> object:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None
    if isinstance(cell, str):
        if not cell.strip():
            return None
        try:
            return parse_literal(cell, max_chars)
        except LiteralError as exc:
            reason = "too_large" if "over the limit" in str(exc) else "syntax"
            raise RowProblem(f"{field}_{reason}", field, str(exc)) from None
    if isinstance(cell, Sequence) and not isinstance(cell, (str, bytes)):
        return list(cell)
    return cell


def _kind(value: object) -> str:
    return "empty" if value is None else f"a {type(value).__name__}"


def _class_name(obj: dict, index: int) -> str:
    present = [obj[key] for key in CLASS_KEYS if key in obj]
    if not present:
        raise RowProblem("label_class", "label", f"object {index} has neither 'type' nor 'label'")
    if len(present) == 2 and present[0] != present[1]:
        raise RowProblem("label_class", "label", f"object {index} has 'type' {present[0]!r} but 'label' {present[1]!r}")
    name = present[0]
    if not isinstance(name, str) or not name:
        raise RowProblem("label_class", "label", f"object {index} class name {name!r} is not a non-empty string")
    return name


def _coordinate(obj: dict, key: str, index: int) -> float:
    if key not in obj:
        raise RowProblem("label_box", "label", f"object {index} has no {key!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowProblem("label_box", "label", f"object {index} {key!r} is {value!r}, expected a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise RowProblem("label_box", "label", f"object {index} {key!r} is {value!r}, expected a finite number")
    return number


def _parse_confidence_column(column: pa.Array, max_chars: int) -> _NumberLists:
    n = len(column)
    given = np.zeros(n, bool)
    counts = np.zeros(n, np.int64)
    issues: dict[int, RowIssue] = {}
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        given = pc.is_valid(column).to_numpy(zero_copy_only=False)
        counts = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        values = _to_float(pc.list_flatten(column))
        _flag_bad_confidences(values, counts, issues)
        return _NumberLists(given, counts, values, issues)
    if not _is_text(column):
        column = pc.cast(column, pa.string())
    fast = _fast_rows(column, _NUMBER_CELL, max_chars)
    fast_counts, items = _split_lists(column.take(fast), ", ")
    given[fast] = True
    counts[fast] = fast_counts
    slow_values: dict[int, list[float]] = {}
    slow_rows = np.setdiff1d(np.arange(n), fast)
    for row, cell in zip(slow_rows.tolist(), column.take(slow_rows).to_pylist(), strict=True):
        try:
            value = _cell_value(cell, "label_confidence", max_chars)
        except RowProblem as problem:
            issues[row] = problem.issue
            continue
        if value is None:
            continue
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            issues[row] = RowIssue(
                "confidence", "label_confidence", f"label_confidence is {value!r}, expected a list of numbers"
            )
            continue
        given[row] = True
        counts[row] = len(value)
        slow_values[row] = [float(v) for v in value]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    values = np.empty(int(offsets[-1]), np.float64)
    if len(items):
        values[segment_indices(offsets[fast], fast_counts)] = _to_float(items)
    for row, vals in slow_values.items():
        values[offsets[row] : offsets[row + 1]] = vals
    _flag_bad_confidences(values, counts, issues)
    return _NumberLists(given, counts, values, issues)


def _flag_bad_confidences(values: np.ndarray, counts: np.ndarray, issues: dict[int, RowIssue]) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        rows = row_of_items(counts)
        for row in np.unique(rows[bad]).tolist():
            issues.setdefault(
                row,
                RowIssue(
                    "confidence", "label_confidence", "label_confidence holds a value that is not a finite number"
                ),
            )


# One object as the readers of other formats hand it over: class, xmin, ymin, xmax, ymax, crowd.
ObjectTuple = tuple[str, float, float, float, float, bool]


def parsed_from_objects(rows: Sequence[Sequence[ObjectTuple]], issues: dict[int, RowIssue]) -> ParsedLabels:
    """ParsedLabels from per-row object lists that a format reader already validated and mapped to
    corners (rows with an issue keep no objects). Boxes are kept as given, so an inverted one stays
    degenerate and is dropped and counted later, not silently flipped."""
    counts = np.array([0 if row in issues else len(objects) for row, objects in enumerate(rows)], np.int64)
    kept = [obj for row, objects in enumerate(rows) if row not in issues for obj in objects]
    vocab: dict[str, int] = {}
    codes = np.array([vocab.setdefault(obj[0], len(vocab)) for obj in kept], np.int32)
    boxes = np.array([obj[1:5] for obj in kept], np.float64).reshape(-1, 4)
    crowd = np.array([bool(obj[5]) for obj in kept], bool)
    return ParsedLabels(
        counts=counts, class_codes=codes, vocab=tuple(vocab), boxes=boxes, confidences=np.ones(len(kept)),
        issues=dict(issues), crowd=crowd if crowd.any() else None,
    )  # fmt: skip
