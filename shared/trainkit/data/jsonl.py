"""AzureML AutoML-for-images JSON Lines label sets: object detection, multi-class and multi-label.

One JSON object per line ("data schemas to train computer vision models"):

    {"image_url": "azureml://datastores/ds/paths/img/1.jpg",
     "image_details": {"format": "jpg", "width": "499px", "height": "666px"},
     "label": [{"label": "can", "topX": 0.26, "topY": 0.41, "bottomX": 0.74, "bottomY": 0.70, "isCrowd": 0}]}

Here `topX`/`topY` are the box's top-left corner and `bottomX`/`bottomY` its bottom-right corner,
normalised to 0..1: xmin = topX, ymin = topY, xmax = bottomX, ymax = bottomY. (The labelling API's
table uses the same key names for the two ends of each range; each format is mapped by its own
definition, never guessed.) `label` as a string is a multi-class image label, as a list of strings a
multi-label one: each becomes an object covering the whole image, so the classifier trainers read
them as they read boxes. Blank lines are skipped; every problem names the file and line.

pyarrow's JSON reader takes a file whose lines all have the detection form with consistent types;
any other file (classification, mixed types, a bad line) is parsed line by line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from trainkit.data.labels import ObjectTuple, ParsedLabels, RowIssue, RowProblem, parsed_from_objects
from trainkit.data.tables import LabelTable
from trainkit.errors import DatasetError

CORNERS = ("topX", "topY", "bottomX", "bottomY")  # xmin, ymin, xmax, ymax in this schema
WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)


def read_jsonl(files: list[Path], source: str) -> tuple[LabelTable, ParsedLabels]:
    """Read AutoML JSON Lines files (in order) into a row table (one row per line) and parsed labels."""
    urls: list[str | None] = []
    objects: list[list[ObjectTuple]] = []
    kinds: list[str] = []
    issues: dict[int, RowIssue] = {}
    file_index: list[np.ndarray] = []
    line_numbers: list[np.ndarray] = []
    for i, path in enumerate(files):
        start = len(urls)
        fast = _read_detection_fast(path)
        if fast is not None:
            file_urls, file_objects, numbers = fast
            file_kinds, file_issues = ["boxes"] * len(file_urls), {}
        else:
            file_urls, file_objects, file_kinds, numbers, file_issues = _read_lines(path)
        urls += file_urls
        objects += file_objects
        kinds += file_kinds
        issues.update({start + row: issue for row, issue in file_issues.items()})
        file_index.append(np.full(len(file_urls), i, np.int32))
        line_numbers.append(np.asarray(numbers, np.int64))
    _flag_mixed_tasks(kinds, issues)
    table = LabelTable(
        source=source, files=tuple(str(p) for p in files), file_index=np.concatenate(file_index or [np.zeros(0)]),
        row_number=np.concatenate(line_numbers or [np.zeros(0)]), image_url=pa.array(urls, pa.string()), label=None,
        confidence=None, extra_columns=(), unit="line",
    )  # fmt: skip
    return table, parsed_from_objects(objects, issues)


def _read_detection_fast(path: Path) -> tuple[list[str | None], list[list[ObjectTuple]], list[int]] | None:
    """The whole file through Arrow when every line is a detection line with clean types, else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None  # the line path says why, naming the file
    if any(not line.strip() for line in data.splitlines()):
        return None  # blank lines: Arrow skips them, and line numbers would no longer match
    try:
        table = pajson.read_json(pa.BufferReader(data))
    except pa.ArrowException:
        return None
    names = table.column_names
    if "image_url" not in names or "label" not in names or table.num_rows == 0:
        return None
    label = table.column("label").combine_chunks()
    url = table.column("image_url").combine_chunks()
    if not pa.types.is_list(label.type) or not pa.types.is_struct(label.type.value_type):
        return None
    fields = {f.name: f.type for f in label.type.value_type}
    if "label" not in fields or not all(k in fields for k in CORNERS) or not pa.types.is_string(url.type):
        return None
    if not pa.types.is_string(fields["label"]) or not all(pa.types.is_floating(fields[k]) or pa.types.is_integer(
            fields[k]) for k in CORNERS):  # fmt: skip
        return None
    if label.null_count or url.null_count:
        return None
    flat = pc.list_flatten(label)
    columns = {k: pc.struct_field(flat, [list(fields).index(k)]) for k in ("label", *CORNERS)}
    if any(c.null_count for c in columns.values()):
        return None
    coords = np.stack([columns[k].to_numpy(zero_copy_only=False).astype(np.float64) for k in CORNERS], axis=1)
    if not np.isfinite(coords).all():
        return None
    classes = columns["label"].to_pylist()
    if any(not name.strip() for name in classes):
        return None
    crowd = np.zeros(len(classes), bool)
    if "isCrowd" in fields:
        values = pc.struct_field(flat, [list(fields).index("isCrowd")])
        if not (pa.types.is_integer(values.type) or pa.types.is_boolean(values.type)):
            return None
        crowd = pc.fill_null(values.cast(pa.int64()), 0).to_numpy(zero_copy_only=False) != 0
    counts = pc.list_value_length(label).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    per_row = [
        [(classes[j], *coords[j].tolist(), bool(crowd[j])) for j in range(offsets[r], offsets[r + 1])]
        for r in range(len(counts))
    ]
    return url.to_pylist(), per_row, list(range(1, table.num_rows + 1))


def _read_lines(
    path: Path,
) -> tuple[list[str | None], list[list[ObjectTuple]], list[str], list[int], dict[int, RowIssue]]:
    """(image_url, objects, kind: boxes | classes | empty, line number) of each non-blank line, and issues."""
    urls: list[str | None] = []
    objects: list[list[ObjectTuple]] = []
    kinds: list[str] = []
    numbers: list[int] = []
    issues: dict[int, RowIssue] = {}
    try:
        handle = path.open(encoding="utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                row = len(urls)
                numbers.append(number)
                try:
                    url, found, kind = _parse_line(line)
                except RowProblem as problem:
                    url, found, kind = None, [], "empty"
                    issues[row] = problem.issue
                urls.append(url)
                objects.append(found)
                kinds.append(kind)
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    return urls, objects, kinds, numbers, issues


def _parse_line(line: str) -> tuple[str, list[ObjectTuple], str]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RowProblem("json", "line", f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise RowProblem("json", "line", f"a line must be a JSON object, not {type(value).__name__}")
    url = value.get("image_url")
    if not isinstance(url, str) or not url.strip():
        raise RowProblem("image_url", "image_url", f"image_url is {url!r}, expected a path or URI")
    if "label" not in value:
        raise RowProblem("label_missing", "label", "no 'label'; write [] for an image with no objects")
    label = value["label"]
    if isinstance(label, str):
        return url, [_whole_image(label, 1)], "classes"
    if not isinstance(label, list):
        raise RowProblem("label_structure", "label", f"label is {type(label).__name__}, expected a list or a string")
    if not label:
        return url, [], "empty"
    if all(isinstance(item, str) for item in label):
        return url, [_whole_image(name, i) for i, name in enumerate(label, start=1)], "classes"
    return url, [_box(item, i) for i, item in enumerate(label, start=1)], "boxes"


def _whole_image(name: str, index: int) -> ObjectTuple:
    if not name.strip():
        raise RowProblem("label_class", "label", f"label {index} is an empty class name")
    return (name, *WHOLE_IMAGE, False)


def _box(item: object, index: int) -> ObjectTuple:
    if not isinstance(item, dict):
        raise RowProblem("label_structure", "label", f"object {index} is {type(item).__name__}, expected an object")
    name = item.get("label")
    if not isinstance(name, str) or not name.strip():
        raise RowProblem("label_class", "label", f"object {index} 'label' is {name!r}, expected a class name")
    corners = []
    for key in CORNERS:
        number = item.get(key)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise RowProblem("label_box", "label", f"object {index} {key!r} is {number!r}, expected a number 0..1")
        corners.append(float(number))
    crowd = item.get("isCrowd", 0)
    if crowd not in (0, 1, True, False):
        raise RowProblem("label_box", "label", f"object {index} 'isCrowd' is {crowd!r}, expected 0 or 1")
    return (name, *corners, bool(crowd))


def _flag_mixed_tasks(kinds: list[str], issues: dict[int, RowIssue]) -> None:
    """Whole-image labels (classification) and boxes (detection) in one label set: the rows of the kind
    seen second are bad rows, named, rather than a dataset half of whose objects mean something else."""
    first = next((kind for row, kind in enumerate(kinds) if kind != "empty" and row not in issues), None)
    for row, kind in enumerate(kinds):
        if kind not in ("empty", first) and row not in issues:
            issues[row] = RowIssue("label_structure", "label", f"label holds {_TASKS[kind]} but the first labelled "
                                   f"line holds {_TASKS[first]}; one label set is one task")  # fmt: skip


_TASKS = {"boxes": "boxes (object detection)", "classes": "class names (image classification)"}
