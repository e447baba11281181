"""YOLO label sets (Ultralytics' layout): one `.txt` per image, `class cx cy w h` per line, normalised.

Two ways in, both read as one row per image, with image_url the image's path under the dataset root
(pass that root as `--imageset`):

    --labelset ROOT              a folder with images/ and labels/ (labels/x/y.txt belongs to images/x/y.jpg);
                                 class names from ROOT/data.yaml (or dataset.yaml) `names`, or classes.txt
    --labelset data.yaml         Ultralytics' data YAML: `path` (the root; relative to the YAML's folder),
    --labelset data.yaml#val     `train` / `val` / `test` (folders or .txt lists of images, relative to
                                 `path`), `names` (a list, or {id: name}); `#split` picks one (default train)

An image without a label file has no objects (YOLO's convention); a label file without an image
(a misnamed image, another extension) is counted and named, with the objects it holds, as they are
lost. A line that is not five numbers with a known class id is a bad row naming the label file and
line; the box's corners are cx -/+ w/2, cy -/+ h/2. The class map is `names`, in their ids' order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from trainkit.data.labels import (
    DeclaredClasses,
    ObjectTuple,
    OrphanLabels,
    ParsedLabels,
    RowIssue,
    RowProblem,
    parsed_from_objects,
)
from trainkit.data.tables import LabelTable
from trainkit.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DATA_YAMLS = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")
SPLITS = ("train", "val", "test")


def is_yolo(path: Path) -> bool:
    """Whether `path` names a YOLO label set: a data YAML (with an optional #split) or a folder holding
    images/ and labels/."""
    if path.is_dir():
        return (path / "images").is_dir() and (path / "labels").is_dir() and not (path / "MLTable").exists()
    base = Path(str(path).split("#", 1)[0])
    return base.suffix.lower() in (".yaml", ".yml")


def read_yolo(path: Path) -> tuple[LabelTable, ParsedLabels, DeclaredClasses, OrphanLabels]:
    """Rows (one per image, image_url relative to the dataset root), their parsed labels, the declared
    class names and the label files without an image."""
    if path.is_dir():
        root, (names, names_file) = path, _folder_names(path)
        images = _images_under(root / "images")
        searched, lists = [(root / "labels", True)], []
    else:
        root, names, images, searched, lists = _from_data_yaml(path)
        names_file = Path(str(path).partition("#")[0])
    label_files = [_label_file(image) for image in images]
    objects: list[list[ObjectTuple]] = []
    issues: dict[int, RowIssue] = {}
    for row, label_file in enumerate(label_files):
        try:
            objects.append(_read_label_file(label_file, names))
        except RowProblem as problem:
            objects.append([])
            issues[row] = problem.issue
    table = LabelTable(
        source=str(path), files=tuple(str(f) for f in label_files), file_index=np.arange(len(images), dtype=np.int32),
        row_number=np.zeros(len(images), np.int64), image_url=pa.array([str(i.relative_to(root)) for i in images]),
        label=None, confidence=None, extra_columns=(), unit="file",
    )  # fmt: skip
    declared = DeclaredClasses(tuple(names), tuple(range(len(names))), str(names_file))
    orphans = _orphans(searched, set(label_files) | set(lists), root)
    return table, parsed_from_objects(objects, issues), declared, orphans


def _orphans(searched: list[tuple[Path, bool]], expected: set[Path], root: Path) -> OrphanLabels:
    """The .txt files in the label folders (recursively where `True`) that no image's label file is."""
    found: set[Path] = set()
    for folder, recursive in searched:
        if folder.is_dir():
            found.update(p for p in (folder.rglob("*.txt") if recursive else folder.glob("*.txt")) if p.is_file())
    lost = sorted(p for p in found - expected if p.name != "classes.txt")
    objects = 0
    for label in lost:
        try:
            objects += sum(
                1 for line in label.read_text(encoding="utf-8", errors="replace").splitlines() if line.split()
            )
        except OSError:
            continue  # unreadable: still named, its objects uncounted
    shown = tuple(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in lost)
    return OrphanLabels(shown, objects)


def _read_label_file(path: Path, names: list[str]) -> list[ObjectTuple]:
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RowProblem("label_unreadable", "label", f"cannot read it ({exc})") from None
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise RowProblem("label_box", "label", f"line {number}: {len(parts)} values, expected 5: class cx cy w h")
        try:
            class_id, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:])
        except ValueError:
            raise RowProblem("label_box", "label", f"line {number}: {line.strip()!r} is not class cx cy w h") from None
        if not 0 <= class_id < len(names):
            raise RowProblem(
                "label_class", "label", f"line {number}: class {class_id} is not one of the {len(names)} names"
            )
        if not all(math.isfinite(v) for v in (cx, cy, w, h)) or w < 0 or h < 0:
            raise RowProblem(
                "label_box", "label", f"line {number}: {line.strip()!r} is not a box (finite, w and h >= 0)"
            )
        found.append((names[class_id], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, False))
    return found


def _label_file(image: Path) -> Path:
    """YOLO's rule: the last /images/ of the path becomes /labels/, the suffix .txt."""
    parts = list(image.parts)
    if "images" not in parts[:-1]:
        return image.with_suffix(".txt")
    last = len(parts) - 1 - parts[::-1].index("images")
    parts[last] = "labels"
    return Path(*parts).with_suffix(".txt")


def _images_under(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such images folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _names(value: object, where: str) -> list[str]:
    if isinstance(value, dict):
        ids = sorted(value)
        if ids != list(range(len(ids))):
            raise DatasetError(f"{where}: names' ids must be 0 to {len(ids) - 1}")
        value = [value[i] for i in ids]
    if not isinstance(value, list) or not value or not all(isinstance(n, str) and n.strip() for n in value):
        raise DatasetError(f"{where}: names must be a non-empty list of class names (or {{id: name}})")
    return [n.strip() for n in value]


def _folder_names(root: Path) -> tuple[list[str], Path]:
    for name in DATA_YAMLS:
        if (root / name).is_file():
            return _names(_load_yaml(root / name).get("names"), str(root / name)), root / name
    for classes in (root / "classes.txt", root / "labels" / "classes.txt"):
        if classes.is_file():
            lines = [line.strip() for line in classes.read_text().splitlines() if line.strip()]
            return _names(lines, str(classes)), classes
    raise DatasetError(f"{root}: a YOLO folder needs its class names: a data.yaml with names, or a classes.txt")


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(f"{path}: not a readable YAML file ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a YOLO data YAML (path, train, val, names)")
    return data


def _from_data_yaml(spec: Path) -> tuple[Path, list[str], list[Path], list[tuple[Path, bool]], list[Path]]:
    """The split's root, names and images; the label folders to look for label files without an image
    in (recursively for a folder entry), and the split's .txt image lists (which are no label files)."""
    text, _, split = str(spec).partition("#")
    path, split = Path(text), split or "train"
    if split not in SPLITS:
        raise DatasetError(f"{spec}: unknown split {split!r}; use #train, #val or #test")
    data = _load_yaml(path)
    names = _names(data.get("names"), str(path))
    root = Path(str(data.get("path") or "."))
    root = root if root.is_absolute() else path.parent / root
    entries = data.get(split)
    if not entries:
        raise DatasetError(f"{path}: no {split!r} split")
    images: list[Path] = []
    searched: list[tuple[Path, bool]] = []
    lists: list[Path] = []
    for entry in entries if isinstance(entries, list) else [entries]:
        where = root / str(entry)
        if where.is_dir():
            images += _images_under(where)
            searched.append((_label_file(where / "_").parent, True))
        elif where.suffix == ".txt" and where.is_file():
            listed = [root / line.strip().removeprefix("./") for line in where.read_text().splitlines() if line.strip()]
            images += listed
            lists.append(where)
            searched += [(folder, False) for folder in sorted({_label_file(image).parent for image in listed})]
        else:
            raise DatasetError(f"{path}: {split} entry {entry!r} is neither a folder nor a .txt list under {root}")
    return root, names, images, searched, lists
