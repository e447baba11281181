"""`trainkit convert`: a label set from one format to another, through the image sizes.

    csv    the labelling API's table (pandas `to_csv`): `label` dicts with `type`, `bottomX` (xmin),
           `topX` (xmax), `bottomY` (ymin), `topY` (ymax) in pixels, and `label_confidence`
    jsonl  AzureML AutoML for images JSON Lines (normalised top-left/bottom-right corners) with an
           MLTable file beside it (`read_json_lines`, image_url as stream_info), as AutoML takes it
    coco   COCO JSON (pixel `bbox` = x, y, width, height; one category per class, ids from 1, or
           a COCO source's own category ids)
    yolo   a YOLO dataset folder: `labels/<image path>.txt` (`class cx cy w h`, normalised), `data.yaml`
           (`names`) and `images`, a link to the image root, so Ultralytics and `trainkit` read the
           folder as it is (its image_url values gain the `images/` prefix)

The classes and their order (the ids of YOLO and COCO) are `--class-map`'s, else those the source
declares (YOLO's names, COCO's categories: YOLO -> YOLO and COCO -> COCO keep every id and name,
classes without objects included), else the names the objects carry, sorted.

Every row is read and checked as `validate` does (the same readers, the same image lookup, sizes
from the image headers with EXIF orientation applied); pixels and normalised values are converted
with those sizes in float64, so CSV -> JSONL -> CSV and CSV -> COCO -> CSV give back every object
(up to float formatting). image_url values are written as they were read (URIs stay URIs). What a
format cannot hold is counted and said: confidences other than 1 leave JSON Lines and COCO, crowd
regions leave the labelling API's table. Bad rows follow `--on-bad-row`. The output is written
whole, then renamed into place.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import yaml

from trainkit.atomic import write_bytes_atomic
from trainkit.data.dataset import DatasetOptions, DatasetPair, read_pair
from trainkit.data.formats import CONVERT_FORMATS
from trainkit.data.labels import DeclaredClasses
from trainkit.data.records import row_of_items
from trainkit.data.uris import datastore_path
from trainkit.errors import DatasetError

log = logging.getLogger(__name__)

MLTABLE = """\
# Written by trainkit convert: AzureML AutoML for images reads this folder as a data asset.
paths:
  - file: ./{name}
transformations:
  - read_json_lines:
      encoding: utf8
      invalid_lines: error
      include_path_column: false
  - convert_column_types:
      - columns: image_url
        column_type: stream_info
"""


@dataclass(frozen=True)
class Converted:
    """What `convert` wrote and what it could not carry over."""

    written: list[Path]
    images: int
    objects: int
    skipped_rows: int
    dropped_confidences: int  # objects whose confidence (not 1) the target format cannot hold
    dropped_crowd: int  # crowd regions the target format cannot hold


def convert(pair: DatasetPair, options: DatasetOptions, to: str, output: Path) -> Converted:
    """Convert `pair`'s label set to format `to` at `output` (see the module doc)."""
    if to not in CONVERT_FORMATS:
        raise DatasetError(f"--to {to}: use one of {', '.join(CONVERT_FORMATS)}")
    rows = read_pair(pair, options)
    report, parsed = rows.report, rows.source.parsed
    if report.first_problem and options.on_bad_row == "error":
        raise DatasetError(f"{report.first_problem}; fix the row, or pass --on-bad-row skip to leave such rows out")
    if not rows.valid.any():
        raise DatasetError(f"{pair.labelset}: no usable row to convert")
    obj_row = row_of_items(parsed.counts)
    sizes = rows.sizes[obj_row].astype(np.float64)
    scale = np.concatenate([sizes, sizes], axis=1)  # width, height, width, height
    pixels = parsed.boxes * scale if rows.units == "relative" else parsed.boxes.astype(np.float64)
    crowd = parsed.crowd if parsed.crowd is not None else np.zeros(len(obj_row), bool)
    urls = rows.source.table.image_url.to_pylist()
    images = [_Image(urls[r], int(rows.sizes[r, 0]), int(rows.sizes[r, 1]), rows.relative[r] or "")
              for r in np.flatnonzero(rows.valid)]  # fmt: skip
    offsets = np.concatenate([[0], np.cumsum(parsed.counts)])
    for image, r in zip(images, np.flatnonzero(rows.valid), strict=True):
        for j in range(int(offsets[r]), int(offsets[r + 1])):
            image.objects.append(_Object(parsed.vocab[parsed.class_codes[j]], *pixels[j].tolist(),
                                  float(parsed.confidences[j]), bool(crowd[j])))  # fmt: skip
    objects = [obj for image in images for obj in image.objects]
    dropped_confidences = sum(obj.confidence != 1.0 for obj in objects) if to != "csv" else 0
    dropped_crowd = sum(obj.crowd for obj in objects) if to in ("csv", "yolo") else 0
    classes = _classes(rows.source.declared, rows.source.format == "coco", options.class_map, objects)
    if to == "yolo":
        written = _write_yolo(images, output, rows.root, [name for name, _ in classes])
    elif to == "coco":
        written = _write_coco(images, output, classes)
    else:
        written = {"csv": _write_csv, "jsonl": _write_jsonl}[to](images, output)
    if dropped_confidences:
        log.warning("%d objects have a confidence other than 1, which %s does not hold: written without it",
                    dropped_confidences, to)  # fmt: skip
    if dropped_crowd:
        log.warning("%d crowd regions left out: %s has no crowd flag", dropped_crowd, to)
    return Converted(written, len(images), len(objects) - dropped_crowd, int((~rows.valid).sum()),
                     dropped_confidences, dropped_crowd)  # fmt: skip


def _classes(
    declared: DeclaredClasses | None, coco_ids: bool, fixed: tuple[str, ...] | None, objects: list[_Object]
) -> list[tuple[str, int]]:
    """(name, COCO category id) of every class written, in class-id order (see the module doc); `coco_ids`:
    the declared ids are COCO's own, kept."""
    if fixed is not None:
        return [(name, i) for i, name in enumerate(fixed, start=1)]
    if declared is not None:
        absent = sorted(set(declared.names) - {obj.name for obj in objects})
        if absent:
            log.warning("classes %s declares with no object, kept with their ids: %s", declared.where,
                        ", ".join(absent))  # fmt: skip
        # COCO's ids start anywhere and may have gaps: kept. Other formats' 0.. become COCO's 1..
        ids = declared.ids if coco_ids else tuple(range(1, len(declared.names) + 1))
        return list(zip(declared.names, ids, strict=True))
    return [(name, i) for i, name in enumerate(sorted({obj.name for obj in objects}), start=1)]


class _Object(NamedTuple):
    name: str
    x0: float  # pixels
    y0: float
    x1: float
    y1: float
    confidence: float
    crowd: bool


@dataclass
class _Image:
    url: str
    width: int
    height: int
    path: str  # relative to the image root
    objects: list[_Object] = field(default_factory=list)


def _write_csv(images: list[_Image], output: Path) -> list[Path]:
    rows = []
    for image in images:
        kept = [o for o in image.objects if not o.crowd]
        label = [{"type": n, "bottomX": x0, "topX": x1, "bottomY": y0, "topY": y1} for n, x0, y0, x1, y1, _, _ in kept]
        rows.append({"image_url": image.url, "label": label, "label_confidence": [o.confidence for o in kept]})
    # As the labelling API writes it: pandas to_csv of list-of-dict cells (index included).
    return [write_bytes_atomic(output, pd.DataFrame(rows).to_csv().encode("utf-8"))]


def _write_jsonl(images: list[_Image], output: Path) -> list[Path]:
    lines = []
    for image in images:
        w, h = image.width, image.height
        label = [{"label": n, "topX": x0 / w, "topY": y0 / h, "bottomX": x1 / w, "bottomY": y1 / h,
                  "isCrowd": int(crowd)} for n, x0, y0, x1, y1, _, crowd in image.objects]  # fmt: skip
        details = {"format": Path(image.path).suffix.lstrip(".").lower(), "width": f"{w}px", "height": f"{h}px"}
        lines.append(json.dumps({"image_url": image.url, "image_details": details, "label": label}))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    mltable = output.parent / "MLTable"
    return [write_bytes_atomic(output, data), write_bytes_atomic(mltable, MLTABLE.format(name=output.name).encode())]


def _write_coco(images: list[_Image], output: Path, classes: list[tuple[str, int]]) -> list[Path]:
    category = dict(classes)
    coco_images, annotations = [], []
    for image_id, image in enumerate(images, start=1):
        entry = {"id": image_id, "file_name": image.url, "width": image.width, "height": image.height}
        if datastore_path(image.url) is not None:  # an AzureML URI: where Data Labeling keeps it
            entry.update(file_name=image.path, coco_url=image.url)
        coco_images.append(entry)
        for n, x0, y0, x1, y1, _, crowd in image.objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category[n],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": int(crowd),
            })  # fmt: skip
    data = {"images": coco_images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in category.items()]}  # fmt: skip
    return [write_bytes_atomic(output, json.dumps(data).encode("utf-8"))]


def _write_yolo(images: list[_Image], output: Path, image_root: Path, names: list[str]) -> list[Path]:
    ids = {name: i for i, name in enumerate(names)}
    output.mkdir(parents=True, exist_ok=True)
    link = output / "images"
    if link.is_symlink() or link.exists():
        if not (link.is_symlink() and link.resolve() == image_root.resolve()):
            raise DatasetError(f"{link} exists and is not a link to {image_root}; choose an empty --output folder")
    else:
        link.symlink_to(image_root.resolve(), target_is_directory=True)
    for image in images:
        w, h = image.width, image.height
        lines = [f"{ids[n]} {(x0 + x1) / 2 / w!r} {(y0 + y1) / 2 / h!r} {(x1 - x0) / w!r} {(y1 - y0) / h!r}"
                 for n, x0, y0, x1, y1, _, crowd in image.objects if not crowd]  # fmt: skip
        label = (output / "labels" / image.path).with_suffix(".txt")
        write_bytes_atomic(label, "".join(f"{line}\n" for line in lines).encode())
    data = {"path": ".", "train": "images", "names": names}
    write_bytes_atomic(output / "data.yaml", yaml.safe_dump(data, sort_keys=False).encode())
    return [output / "data.yaml", output / "labels", link]
