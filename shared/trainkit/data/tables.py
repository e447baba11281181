"""Read a label set (CSV, Parquet, a folder of them, or an MLTable folder) into Arrow columns.

Only the columns trainkit uses are read; every other column is listed and ignored. Rows keep the
file they came from and their 1-based data-row number (row 1 is the first row after the header),
so every later message can name both.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trainkit.data.formats import CSV_DELIMITERS, LABEL_FILE_TYPES, files_in_folder, is_label_file, is_parquet
from trainkit.data.mltable import TableFile, read_mltable
from trainkit.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_URL = "image_url"
LABEL = "label"
CONFIDENCE = "label_confidence"
REQUIRED_COLUMNS = (IMAGE_URL, LABEL)
USED_COLUMNS = (IMAGE_URL, LABEL, CONFIDENCE)


@dataclass(frozen=True)
class LabelTable:
    """The used columns of every row of a label set, with where each row came from."""

    source: str
    files: tuple[str, ...]
    file_index: np.ndarray  # (rows,) int32 into files
    row_number: np.ndarray  # (rows,) int64, 1-based within its file
    image_url: pa.Array
    label: pa.Array | None  # None: a format whose reader parsed the labels itself (JSON Lines, COCO)
    confidence: pa.Array | None
    extra_columns: tuple[str, ...]
    unit: str = "row"  # what row_number counts, for messages: row, line, image id (file: a file per row)

    def __len__(self) -> int:
        return len(self.image_url)

    def where(self, row: int) -> str:
        """'file row N' (or 'file line N', 'file image id N'; just 'file' for one file per row) for messages."""
        if self.unit == "file":
            return self.files[self.file_index[row]]
        return f"{self.files[self.file_index[row]]} {self.unit} {self.row_number[row]}"


def read_labelset(path: str | Path) -> LabelTable:
    """Read a label set from a CSV/Parquet file, a folder of such files, or an MLTable folder."""
    root = Path(path)
    if not root.exists():
        raise DatasetError(
            f"label set {root} does not exist; pass a CSV or Parquet file, a folder of them, or an MLTable folder"
        )
    if root.is_dir() and (root / "MLTable").is_file():
        files = read_mltable(root)
        if any(spec.format == "jsonl" for spec in files):
            raise DatasetError(f"{root}: a JSON Lines MLTable; read it with trainkit.data.label_sets.read_labels")
    elif root.is_dir():
        files = _files_in_folder(root)
    else:
        files = [_table_file(root)]
    columns: dict[str, list[pa.Array]] = {name: [] for name in USED_COLUMNS}
    extras: list[str] = []
    file_index, row_number = [], []
    headers = [_read_header(spec) for spec in files]
    for i, (spec, header) in enumerate(zip(files, headers, strict=True)):
        table = _read_file(spec, header)
        n = table.num_rows
        for name in USED_COLUMNS:
            if name in table.column_names:
                columns[name].append(_as_array(table.column(name), spec.path, name))
            else:
                columns[name].append(pa.nulls(n, pa.string()))
        extras += [c for c in header if c not in USED_COLUMNS and c not in extras]
        file_index.append(np.full(n, i, np.int32))
        row_number.append(np.arange(1, n + 1, dtype=np.int64))
    has_confidence = any(CONFIDENCE in header for header in headers)
    return LabelTable(
        source=str(root),
        files=tuple(str(spec.path) for spec in files),
        file_index=np.concatenate(file_index),
        row_number=np.concatenate(row_number),
        image_url=_concat(columns[IMAGE_URL]),
        label=_concat(columns[LABEL]),
        confidence=_concat(columns[CONFIDENCE]) if has_confidence else None,
        extra_columns=tuple(extras),
    )


def _files_in_folder(root: Path) -> list[TableFile]:
    found = [p for p in files_in_folder(root) if is_label_file(p)]
    if not found:
        raise DatasetError(f"label set folder {root} holds no {LABEL_FILE_TYPES} file and no MLTable file")
    return [_table_file(p) for p in found]


def _table_file(path: Path) -> TableFile:
    suffix = path.suffix.lower()
    if is_parquet(path):
        return TableFile(path, "parquet")
    if suffix in CSV_DELIMITERS:
        return TableFile(path, "csv", delimiter=CSV_DELIMITERS[suffix])
    raise DatasetError(f"label set {path}: unsupported file type {suffix or '(none)'}; use {LABEL_FILE_TYPES}")


def _read_header(spec: TableFile) -> tuple[str, ...]:
    try:
        if spec.format == "parquet":
            return tuple(pq.read_schema(spec.path).names)
        with open(spec.path, encoding=_python_encoding(spec.encoding), newline="") as handle:
            return tuple(next(csv.reader(handle, delimiter=spec.delimiter), []))
    except (OSError, UnicodeDecodeError, csv.Error, pa.ArrowException) as exc:
        raise DatasetError(
            f"{spec.path}: cannot read its header ({_short(exc)}); is it a valid {spec.format} file?"
        ) from None


def _python_encoding(encoding: str) -> str:
    return "utf-8-sig" if encoding.replace("-", "").lower() == "utf8" else encoding


def _read_file(spec: TableFile, header: tuple[str, ...]) -> pa.Table:
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DatasetError(
            f"{spec.path}: no column {missing[0]!r} (columns: {', '.join(map(repr, header)) or 'none'}); "
            f"a label set needs columns {', '.join(REQUIRED_COLUMNS)}"
        )
    wanted = [c for c in USED_COLUMNS if c in header]
    try:
        if spec.format == "parquet":
            return pq.read_table(spec.path, columns=wanted)
        try:
            return _read_csv(spec, wanted, block_size=None)
        except pa.ArrowInvalid as exc:
            if "straddle" not in str(exc):
                raise
            # A cell longer than Arrow's block (1 MB: some 15,000 objects in one label cell) cannot be
            # split when values may hold newlines: one block for the whole file instead.
            return _read_csv(spec, wanted, block_size=min(spec.path.stat().st_size + 1, 2**31 - 1))
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{spec.path}: cannot read as {spec.format} ({_short(exc)})") from None


def _read_csv(spec: TableFile, wanted: list[str], block_size: int | None) -> pa.Table:
    read = pacsv.ReadOptions(encoding=spec.encoding, **({"block_size": block_size} if block_size else {}))
    return pacsv.read_csv(
        spec.path,
        read_options=read,
        parse_options=pacsv.ParseOptions(delimiter=spec.delimiter, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            include_columns=wanted, column_types={c: pa.string() for c in wanted}, strings_can_be_null=False
        ),
    )


def _as_array(column: pa.ChunkedArray, path: Path, name: str) -> pa.Array:
    array = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    if name == IMAGE_URL and not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise DatasetError(f"{path}: column {IMAGE_URL!r} has type {array.type}, expected text paths")
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array


def _concat(arrays: list[pa.Array]) -> pa.Array:
    types = {a.type for a in arrays if a.null_count != len(a)}
    if len(types) > 1:
        raise DatasetError(
            "the files of this label set disagree on column types (e.g. text labels in one, native lists in "
            "another); write every file of one label set the same way"
        )
    target = types.pop() if types else pa.string()
    return pa.concat_arrays([a if a.type == target else pa.nulls(len(a), target) for a in arrays])


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
