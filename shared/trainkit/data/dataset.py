"""From (image set, label set) pairs to typed records, with every problem counted and located.

Steps for one pair: read the table, parse the labels, check each image_url, look at each image,
decide the box units, convert boxes to pixels, clip them to the image, drop degenerate and
low-confidence objects. Then the class map over all pairs and the train/validation split.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from trainkit.classmap import ClassMap
from trainkit.data.class_names import ClassNames, class_renaming, fixed_renaming, rows_outside_class_map
from trainkit.data.images import ImageInfo, detect_datastore, image_location, image_root, probe_images
from trainkit.data.label_sets import LabelSource, read_labels
from trainkit.data.labels import RELATIVE_LIMIT, DeclaredClasses, ParsedLabels, RowIssue
from trainkit.data.literal import DEFAULT_MAX_CELL_CHARS
from trainkit.data.records import Records, Regions, row_of_items
from trainkit.data.tables import LabelTable
from trainkit.errors import BadRowPolicy, DatasetError

ORPHAN_EXAMPLES = 3  # label files without an image named in the log and report
log = logging.getLogger(__name__)

BoxUnits = Literal["auto", "pixel", "relative"]
MAX_EXAMPLES = 10
MIN_MEDIAN_BOX_PIXELS = 2.0  # `auto` guessed pixels and the median box is smaller: refused


@dataclass(frozen=True)
class DatasetOptions:
    """How label sets are read; one object for every pair of a run."""

    datastore_name: str | None = None  # None: detect it (see trainkit.data.images.detect_datastore)
    box_units: BoxUnits = "auto"
    min_confidence: float = 0.0
    on_bad_row: BadRowPolicy = "error"
    decode_check: bool = False
    max_cell_chars: int = DEFAULT_MAX_CELL_CHARS
    probe_workers: int | None = None
    class_names: ClassNames = "error"  # names that differ only in case: see trainkit.data.class_names
    class_map: tuple[str, ...] | None = None  # --class-map: the run's classes in id order (None: found in the data)
    image_url_prefix: str = ""  # leading folder(s) of image_url to drop: the image set was mounted below them


@dataclass(frozen=True)
class DatasetPair:
    """An image set folder and the label set that describes it; `datastore_name` overrides the run's."""

    imageset: Path
    labelset: Path
    name: str = "train"
    datastore_name: str | None = None


@dataclass(frozen=True)
class DataConfig:
    """The datasets of a run: training pairs, and validation pairs or a fraction of the training images.

    `train` and `val` take one pair or a tuple of them; several pairs are concatenated, with one
    class map across all of them.
    """

    train: tuple[DatasetPair, ...] | DatasetPair
    val: tuple[DatasetPair, ...] | DatasetPair | None = ()
    val_fraction: float = 0.0
    seed: int = 0
    options: DatasetOptions = field(default_factory=DatasetOptions)

    def __post_init__(self) -> None:
        for name in ("train", "val"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, DatasetPair) else tuple(value or ()))
        if not self.train:
            raise DatasetError("no training data: pass --imageset and --labelset, or --train-set LABELSET:IMAGESET")


@dataclass
class SetReport:
    """What loading one pair found: the summary `validate` prints and writes as JSON."""

    name: str
    labelset: str
    imageset: str
    image_root: str
    datastore_reason: str
    files: list[str]
    extra_columns: list[str]
    rows: int = 0
    box_units: str = ""
    box_units_reason: str = ""
    images_found: int = 0
    images_missing: int = 0
    usable_images: int = 0
    images_without_objects: int = 0
    problems: Counter = field(default_factory=Counter)
    problem_examples: list[str] = field(default_factory=list)
    first_problem: str | None = None
    dropped_objects: Counter = field(default_factory=Counter)
    clipped_objects: int = 0
    objects_per_class: dict[str, int] = field(default_factory=dict)
    box_size: dict[str, dict[str, float]] = field(default_factory=dict)
    hint: str | None = None
    decoded_on_cpu: list[str] = field(default_factory=list)  # --decode-check: files DALI refuses, Pillow reads
    label_format: str = ""  # the format read, e.g. "csv (labelling API)", "jsonl (AutoML)"
    crowd_regions: int = 0  # iscrowd objects: kept out of training, given to the mAP metric
    image_urls: str = ""  # how AzureML URIs in image_url map to files, shown with one example
    declared_classes: list[str] = field(default_factory=list)  # the format's declared classes, in id order
    declared_in: str = ""  # the file that declares them
    orphan_label_files: int = 0  # label files no image belongs to (their objects are lost)
    orphan_label_examples: list[str] = field(default_factory=list)
    orphan_objects: int = 0

    def orphan_warning(self) -> str | None:
        """The warning for label files without an image, as the log and `validate` say it; None if none."""
        if not self.orphan_label_files:
            return None
        hidden = self.orphan_label_files - len(self.orphan_label_examples)
        named = ", ".join(self.orphan_label_examples) + (f" and {hidden} more" if hidden else "")
        return (f"{self.orphan_label_files} label files have no image ({self.orphan_objects} objects, not used): "
                f"{named}; check the images' names and extensions")  # fmt: skip

    def to_json(self) -> dict:
        """The report as plain JSON types."""
        out = dict(self.__dict__)
        out["problems"] = dict(self.problems)
        out["dropped_objects"] = dict(self.dropped_objects)
        return out


@dataclass(frozen=True)
class Dataset:
    """The records a run trains and validates on, their class map, and the reports that built them."""

    train: Records
    val: Records | None
    class_map: ClassMap
    reports: tuple[SetReport, ...]
    split: str
    class_problem: str | None = None  # e.g. class names that differ only in case (see data.class_names)

    def usable(self, policy: BadRowPolicy) -> str | None:
        """None when training can use this dataset under `policy`, else the one-line reason it cannot."""
        if self.class_problem:
            return self.class_problem
        for report in self.reports:
            if policy == "error" and report.first_problem:
                hint = f" ({report.hint})" if report.hint else ""
                return f"{report.first_problem}{hint}; fix the row, or pass --on-bad-row skip to drop such rows"
        train = [r for r in self.reports if r.name.startswith("train")]
        sets = ", ".join(r.labelset for r in train)
        if not len(self.train):
            hints = "; ".join(r.hint for r in train if r.hint)
            return f"no usable image in the training set {sets}" + (f" ({hints})" if hints else "")
        if not self.train.num_objects:
            return f"no objects left in the training set {sets} after filtering"
        return None


@dataclass(frozen=True)
class PairRows:
    """One pair read and checked, before records are built: every row's labels (in the label set's own
    units, float64), image path and displayed size, and which rows are usable."""

    source: LabelSource
    relative: list[str | None]  # each row's image path under `root` (None: a bad row)
    root: Path
    sizes: np.ndarray  # (rows, 2) int32 width, height (0 where unknown)
    valid: np.ndarray  # (rows,) bool
    units: str  # pixel | relative
    report: SetReport


def load_pair(pair: DatasetPair, options: DatasetOptions) -> tuple[Records, SetReport]:
    """Load one pair into records; rows with problems are left out and reported, never raised."""
    rows = read_pair(pair, options)
    report = rows.report
    records = _build_records(rows.source.parsed, rows.valid, rows.relative, rows.sizes, rows.root, rows.units,
                             options.min_confidence, report)  # fmt: skip
    _summarise(records, report)
    if options.box_units == "auto" and rows.source.units is None and rows.units == "pixel":
        _check_pixel_guess(report, pair.labelset)
    return records, report


def read_pair(pair: DatasetPair, options: DatasetOptions) -> PairRows:
    """Read one pair's label set, find its images and check every row (see load_pair)."""
    if not pair.imageset.is_dir():
        raise DatasetError(f"image set {pair.imageset} is not a folder; pass the folder the images are mounted in")
    datastore = options.datastore_name if pair.datastore_name is None else pair.datastore_name
    if datastore:
        root = image_root(pair.imageset, datastore)
        if not root.is_dir():
            subfolders = sorted(p.name for p in pair.imageset.iterdir() if p.is_dir())[:5]
            raise DatasetError(
                f"image set {pair.imageset} has no folder {datastore!r}; set DATASTORE_NAME "
                f"(or --datastore-name) to the datastore folder, or to empty for ML-studio datasets "
                f"(folders there: {', '.join(subfolders) or 'none'})"
            )
    source = read_labels(pair.labelset, options.max_cell_chars)
    table, parsed = source.table, source.parsed
    issues = dict(parsed.issues)
    if options.class_map is not None:
        for row, issue in rows_outside_class_map(parsed, options.class_map, options.class_names).items():
            issues.setdefault(row, issue)
    relative, uri_row = _relative_paths(table, issues, options.image_url_prefix)
    if datastore is None:
        name, reason = detect_datastore(pair.imageset, relative)
    else:
        name, reason = datastore, f"DATASTORE_NAME is {datastore!r}"
    root = image_root(pair.imageset, name)
    report = SetReport(
        name=pair.name,
        labelset=str(pair.labelset),
        imageset=str(pair.imageset),
        image_root=str(root),
        datastore_reason=reason,
        files=list(table.files),
        extra_columns=list(table.extra_columns),
        rows=len(table),
    )
    if uri_row is not None:
        report.image_urls = f"{table.image_url[uri_row]} -> {root / (relative[uri_row] or '?')}"
    sizes = _probe(root, relative, options, issues, report)
    if report.images_missing and not report.images_found:
        folders = sorted(p.name for p in root.iterdir() if p.is_dir())[:5]
        report.hint = f"none of its images is under {root}; check --imageset and DATASTORE_NAME / --datastore-name" + (
            f" (folders there: {', '.join(folders)})" if folders else ""
        )
    report.label_format = source.format
    if source.declared is not None:
        report.declared_classes, report.declared_in = list(source.declared.names), source.declared.where
    if source.orphans is not None and source.orphans.files:
        report.orphan_label_files = len(source.orphans.files)
        report.orphan_label_examples = list(source.orphans.files[:ORPHAN_EXAMPLES])
        report.orphan_objects = source.orphans.objects
        log.warning("%s: %s", pair.labelset, report.orphan_warning())
    if source.units is not None and options.box_units == "auto":
        units, report.box_units_reason = source.units, source.units_reason
    else:
        units, report.box_units_reason = _decide_units(parsed, options.box_units)
    report.box_units = units
    valid = np.ones(len(table), bool)
    if issues:
        valid[np.fromiter(issues, np.int64, len(issues))] = False
    _record_problems(table, issues, report)
    return PairRows(source, relative, root, sizes, valid, units, report)


def _relative_paths(
    table: LabelTable, issues: dict[int, RowIssue], prefix: str = ""
) -> tuple[list[str | None], int | None]:
    """Each row's image path relative to the image root (None for a bad row), and the first row whose
    image_url is an AzureML URI (None: plain paths), to show how such URIs map."""
    urls = table.image_url.to_pylist()
    relative: list[str | None] = [None] * len(urls)
    first_row: dict[str, int] = {}
    datastores: dict[str, int] = {}
    for row, url in enumerate(urls):
        found = image_location(url, prefix)
        if isinstance(found, RowIssue):
            issues.setdefault(row, found)
            continue
        datastore, path = found
        if datastore is not None:
            datastores.setdefault(datastore, row)
        if path in first_row:
            issues.setdefault(
                row,
                RowIssue(
                    "duplicate_image", "image_url", f"image_url {url!r} is also on {table.where(first_row[path])}"
                ),
            )
        else:
            first_row[path] = row
            relative[row] = path
    if len(datastores) > 1:
        (a, row_a), (b, row_b) = list(datastores.items())[:2]
        raise DatasetError(
            f"{table.source}: its image_url URIs point at more than one datastore ({table.where(row_a)}: {a!r}, "
            f"{table.where(row_b)}: {b!r}); split it into one label set per datastore, each with its image set"
        )
    return relative, next(iter(datastores.values()), None)


def _probe(
    root: Path, relative: list[str | None], options: DatasetOptions, issues: dict[int, RowIssue], report: SetReport
) -> np.ndarray:
    rows = [row for row, path in enumerate(relative) if path is not None]
    results = probe_images((root / relative[row] for row in rows), options.decode_check, options.probe_workers)
    sizes = np.zeros((len(relative), 2), np.int32)
    for row, result in zip(rows, results, strict=True):
        if isinstance(result, ImageInfo):
            sizes[row] = (result.width, result.height)
            report.images_found += 1
        else:
            report.images_missing += result.reason == "image_missing"
            report.images_found += result.reason != "image_missing"
            issues.setdefault(row, result)
    if options.decode_check:
        _check_training_decoder(root, relative, [r for r in rows if r not in issues], report)
    return sizes


def _check_training_decoder(root: Path, relative: list[str | None], rows: list[int], report: SetReport) -> None:
    """Decode the images Pillow read with the decoder training uses (DALI's, on the CPU): those it
    refuses train through the loader's Pillow fallback, and the report names them."""
    from trainkit.data.decode_check import DaliDecodeCheck

    check = DaliDecodeCheck()
    for row in rows:
        path = root / relative[row]
        try:
            problem = check.problem(path.read_bytes())
        except OSError:
            continue  # Pillow just read it; a file that vanished since is the loader's to report
        if problem is not None:
            report.decoded_on_cpu.append(str(path))


def _decide_units(parsed: ParsedLabels, requested: BoxUnits) -> tuple[str, str]:
    if requested != "auto":
        return requested, f"{requested} (as requested)"
    if not len(parsed.boxes):
        return "pixel", "auto -> pixel (no boxes to look at)"
    largest = float(np.abs(parsed.boxes).max())
    if largest <= RELATIVE_LIMIT:
        # Labelling tools write normalised corners a hair past 1 (1.0004): clipped to the image later.
        over = int((parsed.boxes > 1.0).any(axis=1).sum())
        beyond = f"; {over} objects reach past 1 and are clipped to the image" if over else ""
        return (
            "relative",
            f"auto -> relative (all {parsed.boxes.size} box coordinates are within [0, {RELATIVE_LIMIT:g}]{beyond})",
        )
    return "pixel", f"auto -> pixel (largest box coordinate {largest:g} > {RELATIVE_LIMIT:g})"


def _check_pixel_guess(report: SetReport, labelset: Path) -> None:
    """After `auto` guessed pixels: normalised coordinates with a few outliers above the limit would be read
    as pixels, boxes of a pixel or two. Refuse that guess instead of training on it."""
    if not report.box_size:
        return
    width, height = report.box_size["width"]["median"], report.box_size["height"]["median"]
    if min(width, height) < MIN_MEDIAN_BOX_PIXELS:
        raise DatasetError(
            f"{labelset}: box units {report.box_units_reason}, but the median box would be {width:.2g} x {height:.2g} "
            "pixels: the coordinates look normalised with some values above 1; fix those rows, or pass "
            "--box-units relative (or --box-units pixel if such tiny boxes are right)"
        )


def _record_problems(table: LabelTable, issues: dict[int, RowIssue], report: SetReport) -> None:
    for row in sorted(issues):
        issue = issues[row]
        report.problems[issue.reason] += 1
        if len(report.problem_examples) < MAX_EXAMPLES:
            report.problem_examples.append(f"{table.where(row)}, field {issue.field!r}: {issue.detail}")
    report.first_problem = report.problem_examples[0] if report.problem_examples else None


def _build_records(
    parsed: ParsedLabels,
    valid: np.ndarray,
    relative: list[str | None],
    sizes: np.ndarray,
    root: Path,
    units: str,
    min_confidence: float,
    report: SetReport,
) -> Records:
    obj_row = row_of_items(parsed.counts)
    limits = sizes[obj_row][:, [0, 1, 0, 1]].astype(np.float64)  # width, height, width, height
    boxes = parsed.boxes * limits if units == "relative" else parsed.boxes
    clipped = np.clip(boxes, 0.0, limits)
    keep = valid[obj_row]
    low = keep & (parsed.confidences < min_confidence)
    degenerate = keep & ~low & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    drops = {"low_confidence": int(low.sum()), "degenerate_box": int(degenerate.sum())}
    report.dropped_objects = Counter({reason: n for reason, n in drops.items() if n})
    keep &= ~low & ~degenerate
    report.clipped_objects = int((keep & (clipped != boxes).any(axis=1)).sum())

    rows = np.flatnonzero(valid)
    crowd = None
    if parsed.crowd is not None:
        regions = keep & parsed.crowd
        report.crowd_regions = int(regions.sum())
        region_counts = np.bincount(obj_row[regions], minlength=len(valid))[rows]
        crowd = Regions(np.concatenate([[0], np.cumsum(region_counts)]).astype(np.int64),
                        clipped[regions].astype(np.float32), parsed.class_codes[regions].astype(np.int64))  # fmt: skip
        keep &= ~parsed.crowd
    counts = np.bincount(obj_row[keep], minlength=len(valid))[rows]
    return Records(
        paths=np.array([str(root / relative[r]) for r in rows], dtype=object),
        image_urls=np.array([relative[r] for r in rows], dtype=object),
        sizes=sizes[rows],
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        boxes=clipped[keep].astype(np.float32),
        class_ids=parsed.class_codes[keep].astype(np.int64),
        confidences=parsed.confidences[keep].astype(np.float32),
        classes=parsed.vocab,
        crowd=crowd,
    )


def _summarise(records: Records, report: SetReport) -> None:
    report.usable_images = len(records)
    report.images_without_objects = int((np.diff(records.offsets) == 0).sum())
    counts = np.bincount(records.class_ids, minlength=len(records.classes))
    report.objects_per_class = {
        name: int(counts[i]) for i, name in sorted(enumerate(records.classes), key=lambda x: x[1]) if counts[i]
    }
    if records.num_objects:
        width = records.boxes[:, 2] - records.boxes[:, 0]
        height = records.boxes[:, 3] - records.boxes[:, 1]
        report.box_size = {
            name: {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}
            for name, v in (("width", width), ("height", height))
        }


def _load_pairs(pairs: tuple[DatasetPair, ...], options: DatasetOptions) -> tuple[Records, list[SetReport]]:
    """Several pairs as one record set (see Records.concat), with a report per pair."""
    loaded = [load_pair(pair, options) for pair in pairs]
    return Records.concat([records for records, _ in loaded]), [report for _, report in loaded]


def load_dataset(config: DataConfig) -> Dataset:
    """Load every pair of a run, build the class map and split off validation; nothing raised for bad rows."""
    train, reports = _load_pairs(config.train, config.options)
    if config.val:
        val, val_reports = _load_pairs(config.val, config.options)
        reports += val_reports
        split = f"validation set{'s' if len(config.val) > 1 else ''} {', '.join(str(p.labelset) for p in config.val)}"
    elif config.val_fraction > 0 and len(train) < 2:
        val, split = None, "no validation set (too few images to split)"
    elif config.val_fraction > 0:
        train, val = split_by_image(train, config.val_fraction, config.seed)
        split = (
            f"{len(val)} of {len(train) + len(val)} images held out for validation "
            f"(fraction {config.val_fraction:g}, seed {config.seed})"
        )
    else:
        val, split = None, "no validation set"
    used = [train] + ([val] if val is not None else [])
    fixed = config.options.class_map
    absent_note = "classes of the class map with no object in the training set"
    if fixed is None:
        declared = declared_classes(reports, used)
        if declared is not None:
            fixed = declared.names
            absent_note = f"classes {declared.where} declares with no object in the training set (kept, with their ids)"
    if fixed is None:
        rename, notes, class_problem = class_renaming(used, config.options.class_names)
    else:
        rename, notes, class_problem = fixed_renaming(used, fixed, config.options.class_names), [], None
    for note in notes:
        log.info(note)
    train = train.renamed(rename)
    val = val.renamed(rename) if val is not None else None
    used = [train] + ([val] if val is not None else [])
    if fixed is None:
        class_map = ClassMap.from_names(r.classes[i] for r in used for i in np.unique(r.class_ids))
    else:
        class_map = ClassMap(fixed)
        absent = sorted(set(fixed) - {train.classes[i] for i in np.unique(train.class_ids)})
        if absent:
            log.warning("%s: %s", absent_note, ", ".join(absent))
    train = train.with_classes(class_map.names)
    val = val.with_classes(class_map.names) if val is not None else None
    if val is not None and val.num_objects:
        unseen = sorted(set(np.unique(val.class_ids)) - set(np.unique(train.class_ids)))
        if unseen:
            log.warning("classes only in the validation set: %s", ", ".join(class_map.names[i] for i in unseen))
    return Dataset(train, val, class_map, tuple(reports), split, class_problem)


def declared_classes(reports: list[SetReport], parts: list[Records]) -> DeclaredClasses | None:
    """The class list the label sets' formats declare (YOLO's names, COCO's categories), which every
    declaring set must declare alike and which must hold every class the records name; None when no
    set declares one."""
    declaring = [r for r in reports if r.declared_in]
    if not declaring:
        return None
    first = declaring[0]
    for other in declaring[1:]:
        if other.declared_classes != first.declared_classes:
            a, b = first.declared_classes, other.declared_classes
            at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            raise DatasetError(
                f"{first.declared_in} and {other.declared_in} declare different classes: id {at} is "
                f"{_class_at(a, at)} in one, {_class_at(b, at)} in the other; pass --class-map FILE to fix the "
                "classes and their ids for both"
            )
    names = tuple(first.declared_classes)
    extra = sorted({r.classes[i] for r in parts for i in np.unique(r.class_ids)} - set(names))
    if extra:
        raise DatasetError(
            f"objects name classes that {first.declared_in} does not declare ({', '.join(map(repr, extra[:5]))}); "
            "pass --class-map FILE listing every class"
        )
    return DeclaredClasses(names, tuple(range(len(names))), first.declared_in)


def _class_at(names: list[str], at: int) -> str:
    return repr(names[at]) if at < len(names) else f"absent ({len(names)} classes)"


def load_dataset_strict(config: DataConfig) -> Dataset:
    """load_dataset, then raise DatasetError unless training can use the result under the row policy."""
    dataset = load_dataset(config)
    reason = dataset.usable(config.options.on_bad_row)
    if reason:
        raise DatasetError(reason)
    return dataset


def split_by_image(records: Records, fraction: float, seed: int) -> tuple[Records, Records]:
    """A seeded split by image: the same images and seed always give the same validation images."""
    if not 0 < fraction < 1:
        raise DatasetError(f"--val-fraction must be between 0 and 1, got {fraction:g}")
    n = len(records)
    order = np.argsort(records.image_urls.astype(str), kind="stable")
    shuffled = order[np.random.default_rng(seed).permutation(n)]
    n_val = min(n - 1, max(1, round(n * fraction)))
    return records.subset(np.sort(shuffled[n_val:])), records.subset(np.sort(shuffled[:n_val]))
