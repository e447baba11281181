"""The label-set file types trainkit reads, named once: the table reader, MLTable and submit use these."""

from __future__ import annotations

from pathlib import Path

CSV_DELIMITERS: dict[str, str] = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")
LABEL_FILE_SUFFIXES: tuple[str, ...] = (*CSV_DELIMITERS, *PARQUET_SUFFIXES)
LABEL_FILE_TYPES = ".csv, .tsv or .parquet"  # for messages
JSONL_SUFFIXES: tuple[str, ...] = (".jsonl",)  # AutoML for images JSON Lines
COCO_SUFFIXES: tuple[str, ...] = (".json",)
# Every label file trainkit reads, in any format (submit's upload check; see trainkit.data.label_sets).
ANY_LABEL_SUFFIXES: tuple[str, ...] = (*LABEL_FILE_SUFFIXES, *JSONL_SUFFIXES, *COCO_SUFFIXES)
ANY_LABEL_TYPES = ".csv, .tsv, .parquet, .jsonl (AutoML) or .json (COCO)"
CONVERT_FORMATS: tuple[str, ...] = ("csv", "jsonl", "coco", "yolo")  # what `trainkit convert` writes


def is_label_file(path: Path | str) -> bool:
    """Whether the name has the suffix of a label-set file trainkit reads."""
    return Path(str(path).rstrip("/")).suffix.lower() in LABEL_FILE_SUFFIXES


def is_parquet(path: Path | str) -> bool:
    """Whether the name has a Parquet suffix."""
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def is_any_label_file(path: Path | str) -> bool:
    """Whether the name has the suffix of a label file in any format trainkit reads."""
    return Path(str(path).rstrip("/")).suffix.lower() in ANY_LABEL_SUFFIXES


def files_in_folder(root: Path) -> list[Path]:
    """The files under a label-set folder, recursively, in name order; anything under a name starting
    with `.` or `_` (hidden files, `_SUCCESS` markers, `_temporary` folders) is left out."""
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    )  # fmt: skip
