"""COCO JSON label sets: what AzureML Data Labeling exports, and what most tools write.

    {"images": [{"id": 1, "file_name": "img/1.jpg", "width": 640, "height": 480, "coco_url": "..."}],
     "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [x, y, width, height], "iscrowd": 0}],
     "categories": [{"id": 3, "name": "can"}]}

One row per image, in the file's order (an image without annotations is an image with no objects);
`bbox` is the top-left corner and the size: xmin = x, ymin = y, xmax = x + width, ymax = y + height.
The image is `file_name`, or `coco_url` when that holds an AzureML URI (Data Labeling writes the
datastore path there). Units: pixels, except when every image's width and height are 0 or absent
(Data Labeling's export) or every bbox value is within [0, 1.05]: normalised. `iscrowd` regions are
kept apart from training targets (see trainkit.data.records).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from trainkit.atomic import read_json
from trainkit.data.labels import (
    RELATIVE_LIMIT,
    DeclaredClasses,
    ObjectTuple,
    ParsedLabels,
    RowIssue,
    RowProblem,
    parsed_from_objects,
)
from trainkit.data.tables import LabelTable
from trainkit.errors import DatasetError


def read_coco(path: Path) -> tuple[LabelTable, ParsedLabels, str, str, DeclaredClasses | None]:
    """(rows, parsed labels, box units, why those units, its categories) of a COCO file; one row per image."""
    data = read_json(path, str(path), DatasetError, encoding="utf-8-sig")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise DatasetError(f"{path}: not a COCO file: it needs 'images' and 'categories' lists (and 'annotations')")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise DatasetError(f"{path}: 'annotations' must be a list")
    categories = _categories(path, data["categories"])
    images, ids, sizes = _images(path, data["images"])
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    objects: list[list[ObjectTuple]] = [[] for _ in ids]
    issues: dict[int, RowIssue] = {}
    for row, image in enumerate(images):
        if isinstance(image, RowIssue):
            issues[row] = image
    by_row: dict[int, list[dict]] = defaultdict(list)
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or annotation.get("image_id") not in row_of:
            name = annotation.get("id", index) if isinstance(annotation, dict) else index
            image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
            raise DatasetError(f"{path}: annotation {name!r} names image_id {image_id!r}, which is not in 'images'; "
                               "fix the file (every annotation belongs to a listed image)")  # fmt: skip
        by_row[row_of[annotation["image_id"]]].append(annotation)
    for row, found in by_row.items():
        if row in issues:
            continue
        try:
            objects[row] = [_object(a, categories) for a in found]
        except RowProblem as problem:
            issues[row] = problem.issue
    units, reason = _units(sizes, objects)
    urls = [image if isinstance(image, str) else None for image in images]
    table = LabelTable(
        source=str(path), files=(str(path),), file_index=np.zeros(len(ids), np.int32),
        row_number=np.array([i if isinstance(i, int) else -1 for i in ids], np.int64),
        image_url=pa.array(urls, pa.string()), label=None, confidence=None, extra_columns=(), unit="image id",
    )  # fmt: skip
    return table, parsed_from_objects(objects, issues), units, reason, _declared(path, categories)


def _declared(path: Path, categories: dict[object, str]) -> DeclaredClasses | None:
    """The categories by id; None when two share a name (a class map holds each name once, so the
    classes are then those the annotations name, as before)."""
    if len(set(categories.values())) != len(categories) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in categories
    ):
        return None
    ids = sorted(categories)
    return DeclaredClasses(tuple(categories[i] for i in ids), tuple(ids), str(path))


def _categories(path: Path, entries: list) -> dict[object, str]:
    found: dict[object, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("name"), str):
            raise DatasetError(f"{path}: category {entry!r} needs an 'id' and a 'name'")
        if entry["id"] in found:
            raise DatasetError(f"{path}: category id {entry['id']!r} is listed twice")
        if not entry["name"].strip():
            raise DatasetError(f"{path}: category id {entry['id']!r} has an empty name")
        found[entry["id"]] = entry["name"]
    return found


def _images(path: Path, entries: list) -> tuple[list[str | RowIssue], list[object], list[tuple[object, object]]]:
    """Each image's path (or the problem with it), its id, and its declared width and height."""
    images: list[str | RowIssue] = []
    ids: list[object] = []
    seen: set[object] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry:
            raise DatasetError(f"{path}: images[{index}] needs an 'id' (and a 'file_name')")
        if entry["id"] in seen:
            raise DatasetError(f"{path}: image id {entry['id']!r} is listed twice")
        seen.add(entry["id"])
        ids.append(entry["id"])
        url = entry.get("coco_url")
        use = url if isinstance(url, str) and url.startswith(("azureml://", "AmlDatastore://")) else entry.get(
            "file_name")  # fmt: skip
        images.append(use if isinstance(use, str) and use.strip() else
                      RowIssue("image_url", "file_name", f"image id {entry['id']!r} has no file_name"))  # fmt: skip
    return images, ids, [(e.get("width"), e.get("height")) for e in entries]


def _units(sizes: list[tuple[object, object]], objects: list[list[ObjectTuple]]) -> tuple[str, str]:
    """Pixels, unless the file says the boxes are normalised (every image 0 x 0, as Data Labeling writes
    it), or every coordinate is within [0, RELATIVE_LIMIT]."""
    if sizes and all(not w and not h for w, h in sizes):
        return "relative", "coco: every image's width and height are 0 (AzureML Data Labeling): normalised bbox"
    values = np.array([obj[1:5] for found in objects for obj in found], np.float64).reshape(-1, 4)
    if len(values) and np.abs(values).max() <= RELATIVE_LIMIT:
        return "relative", f"coco: every bbox value is within [0, {RELATIVE_LIMIT:g}]: normalised"
    return "pixel", "coco: bbox in pixels"


def _object(annotation: dict, categories: dict[object, str]) -> ObjectTuple:
    name = annotation.get("id", "?")
    category = annotation.get("category_id")
    if category not in categories:
        raise RowProblem(
            "label_class", "annotations", f"annotation {name!r}: category_id {category!r} is not in 'categories'"
        )
    bbox = annotation.get("bbox")
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in bbox)
    ):
        raise RowProblem(
            "label_box", "annotations", f"annotation {name!r}: bbox is {bbox!r}, expected [x, y, width, height]"
        )
    x, y, width, height = (float(v) for v in bbox)
    if width < 0 or height < 0:
        raise RowProblem(
            "label_box", "annotations", f"annotation {name!r}: bbox {bbox!r} has a negative width or height"
        )
    crowd = annotation.get("iscrowd", 0)
    if crowd not in (0, 1, True, False):
        raise RowProblem("label_box", "annotations", f"annotation {name!r}: iscrowd is {crowd!r}, expected 0 or 1")
    return (categories[category], x, y, x + width, y + height, bool(crowd))
