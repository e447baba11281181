"""Read the parts of an MLTable definition that say which files hold the table and how to parse them.

AzureML hands a tabular label set to a job as a folder holding an `MLTable` YAML file. trainkit
honours its `paths` (file, folder, pattern; local or relative to the folder) and its
`read_delimited` / `read_parquet` / `read_json_lines` settings; `convert_column_types` that makes
`image_url` a `stream_info` is what trainkit does with such URIs anyway (trainkit.data.uris); other
transformations are reported and not applied.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from trainkit.data.formats import is_parquet
from trainkit.errors import DatasetError

log = logging.getLogger(__name__)

_REMOTE_PREFIXES = (
    "azureml:",
    "http://",
    "https://",
    "wasbs://",
    "wasb://",
    "abfss://",
    "abfs://",
    "adl://",
    "s3://",
    "gs://",
)
_ENCODINGS = {
    "utf8": "utf8",
    "utf-8": "utf8",
    "iso88591": "latin1",
    "latin1": "latin1",
    "ascii": "ascii",
    "utf16": "utf-16",
    "windows1252": "cp1252",
}
_HEADERS = {"all_files_same_headers", "all_files_different_headers", "from_first_file"}


@dataclass(frozen=True)
class TableFile:
    """One file of a label set and how to parse it."""

    path: Path
    format: str  # "csv", "parquet" or "jsonl"
    delimiter: str = ","
    encoding: str = "utf8"


def read_mltable(folder: Path) -> list[TableFile]:
    """Resolve an MLTable folder to the table files it names, in order."""
    spec_path = folder / "MLTable"
    try:
        spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(
            f"{spec_path}: not a readable MLTable YAML file ({' '.join(str(exc).split())[:200]})"
        ) from None
    if not isinstance(spec, dict) or not isinstance(spec.get("paths"), list) or not spec["paths"]:
        raise DatasetError(f"{spec_path}: an MLTable needs a non-empty 'paths' list")
    fmt, delimiter, encoding = _read_settings(spec_path, spec.get("transformations") or [])
    files: list[Path] = []
    for entry in spec["paths"]:
        files += _expand(spec_path, folder, entry)
    if not files:
        raise DatasetError(f"{spec_path}: its paths match no file")
    return [TableFile(p, fmt or ("parquet" if is_parquet(p) else "csv"), delimiter, encoding) for p in files]


def _read_settings(spec_path: Path, transformations: list) -> tuple[str | None, str, str]:
    fmt, delimiter, encoding = None, ",", "utf8"
    ignored = []
    for step in transformations:
        name, options = next(iter(step.items())) if isinstance(step, dict) and step else (str(step), None)
        options = options if isinstance(options, dict) else {}
        if name == "read_delimited":
            fmt = "csv"
            delimiter = str(options.get("delimiter", ","))
            raw_encoding = str(options.get("encoding", "utf8")).lower()
            if raw_encoding not in _ENCODINGS:
                raise DatasetError(
                    f"{spec_path}: encoding {raw_encoding!r} is not supported "
                    f"(use one of {', '.join(sorted(_ENCODINGS))})"
                )
            encoding = _ENCODINGS[raw_encoding]
            header = options.get("header", "all_files_same_headers")
            if header not in _HEADERS:
                raise DatasetError(
                    f"{spec_path}: header {header!r} is not supported; label sets need a header row naming the columns"
                )
        elif name == "read_parquet":
            fmt = "parquet"
        elif name == "read_json_lines":
            fmt = "jsonl"
            if str(options.get("encoding", "utf8")).lower().replace("-", "") != "utf8":
                raise DatasetError(f"{spec_path}: read_json_lines encoding {options['encoding']!r}: use utf8")
        elif name.startswith("read_"):
            raise DatasetError(
                f"{spec_path}: {name} is not supported; use read_delimited, read_parquet or read_json_lines"
            )
        elif name == "convert_column_types" and isinstance(step, dict) and _image_url_stream_info(step[name]):
            continue
        else:
            ignored.append(name)
    if ignored:
        log.warning("%s: transformations not applied by trainkit: %s", spec_path, ", ".join(ignored))
    return fmt, delimiter, encoding


def _image_url_stream_info(conversions: object) -> bool:
    """Whether a convert_column_types step only makes image_url a stream_info column (AutoML's MLTables)."""
    items = conversions if isinstance(conversions, list) else [conversions]
    for item in items:
        if not isinstance(item, dict):
            return False
        columns = item.get("columns")
        columns = [columns] if isinstance(columns, str) else columns
        if columns != ["image_url"] or str(item.get("column_type")) != "stream_info":
            return False
    return bool(items)


def _expand(spec_path: Path, folder: Path, entry: object) -> list[Path]:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise DatasetError(
            f"{spec_path}: each entry of 'paths' must be one of file:, folder:, pattern: (got {entry!r})"
        )
    kind, raw = next(iter(entry.items()))
    raw = str(raw)
    if raw.startswith(_REMOTE_PREFIXES):
        raise DatasetError(
            f"{spec_path}: path {raw!r} is remote; mount the label set as a job input (AzureML does this for mltable "
            "inputs) or point 'paths' at local files"
        )
    path = Path(raw.removeprefix("file://"))
    path = path if path.is_absolute() else folder / path
    if kind == "file":
        if not path.is_file():
            raise DatasetError(f"{spec_path}: file {raw!r} does not exist (looked for {path})")
        return [path]
    if kind == "folder":
        if not path.is_dir():
            raise DatasetError(f"{spec_path}: folder {raw!r} does not exist (looked for {path})")
        return sorted(
            p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")) and p.name != "MLTable"
        )
    if kind == "pattern":
        return sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    raise DatasetError(f"{spec_path}: unknown paths entry {kind!r}; use file:, folder: or pattern:")
