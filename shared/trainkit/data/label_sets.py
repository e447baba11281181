"""Any label set trainkit reads, by format, into rows and parsed labels: one entry point for validate,
train, predict's labelled mode and submit's local check.

    .csv, .tsv, .parquet file, a folder of them, MLTable read_delimited/read_parquet: the labelling API's table
    .jsonl file, a folder of them, MLTable read_json_lines: AutoML for images JSON Lines
    .json file with images, annotations, categories: COCO
    a folder with images/ and labels/, or a data.yaml[#split]: YOLO
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainkit.data.formats import JSONL_SUFFIXES, files_in_folder, is_label_file
from trainkit.data.labels import DeclaredClasses, OrphanLabels, ParsedLabels, parse_labels
from trainkit.data.literal import DEFAULT_MAX_CELL_CHARS
from trainkit.data.mltable import read_mltable
from trainkit.data.tables import LabelTable, read_labelset
from trainkit.errors import DatasetError


@dataclass(frozen=True)
class LabelSource:
    """A label set read: its rows, their objects, the format's name and, when the format fixes them, the
    box units (None: decided from the values, `--box-units auto`), its declared classes and its label
    files without an image (formats with a file per image)."""

    table: LabelTable
    parsed: ParsedLabels
    format: str
    units: str | None = None
    units_reason: str = ""
    declared: DeclaredClasses | None = None
    orphans: OrphanLabels | None = None


def read_labels(path: str | Path, max_cell_chars: int = DEFAULT_MAX_CELL_CHARS) -> LabelSource:
    """Read the label set at `path` in whichever format it is (see the module doc)."""
    from trainkit.data.coco import read_coco
    from trainkit.data.jsonl import read_jsonl
    from trainkit.data.yolo import is_yolo, read_yolo

    root = Path(path)
    if is_yolo(root):
        table, parsed, declared, orphans = read_yolo(root)
        reason = "yolo: class cx cy w h, normalised to the image"
        return LabelSource(table, parsed, "yolo", "relative", reason, declared, orphans)
    jsonl = _jsonl_files(root)
    if jsonl:
        table, parsed = read_jsonl(jsonl, str(root))
        reason = "jsonl (AutoML): topX/topY, bottomX/bottomY are the normalised top-left, bottom-right corners"
        return LabelSource(table, parsed, "jsonl (AutoML for images)", "relative", reason)
    if root.is_file() and root.suffix.lower() == ".json":
        table, parsed, units, reason, declared = read_coco(root)
        return LabelSource(table, parsed, "coco", units, reason, declared)
    table = read_labelset(root)
    parsed = parse_labels(table.label, table.confidence, max_cell_chars)
    return LabelSource(table, parsed, "table (labelling API)")


def _jsonl_files(root: Path) -> list[Path]:
    """The JSON Lines files of a label set, or [] when it is not one."""
    if root.is_file():
        return [root] if root.suffix.lower() in JSONL_SUFFIXES else []
    if not root.is_dir():
        return []
    if (root / "MLTable").is_file():
        files = read_mltable(root)
        if all(f.format == "jsonl" for f in files):
            return [f.path for f in files]
        if any(f.format == "jsonl" for f in files):
            raise DatasetError(f"{root}/MLTable: mixes JSON Lines with other files; one label set is one format")
        return []
    found = files_in_folder(root)
    lines = [p for p in found if p.suffix.lower() in JSONL_SUFFIXES]
    if lines and any(is_label_file(p) for p in found):
        raise DatasetError(f"label set folder {root} holds both JSON Lines and table files; keep one format per folder")
    return lines
