"""What is wrong with a label set beyond its rows: duplicated images (within a split, and across train
and validation, which leaks), boxes too small to be real, boxes on the image border, one box labelled
twice with different classes, classes with very few objects.

Duplicates are found in two passes. Exact copies share the sha256 of their bytes. Near copies (the
same picture re-encoded or resized) share most of a perceptual hash (pHash: the signs of a 32x32
greyscale thumbnail's lowest 8x8 DCT frequencies against their median, 64 bits); every pair whose
hashes differ in at most `near_bits` bits is then confirmed on the colour thumbnails themselves:
greyscale alone takes a pink square on green for a purple one on teal.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainkit.data.records import Records
from trainkit.geometry.boxes import box_iou

THUMB = 32  # the thumbnail's side: what near-duplicate pairs are confirmed on
NEAR_SHARE = 0.02  # the share of thumbnail pixels two near copies may differ in by more than near_level
NEAR_MEAN = 6.0  # ... and their thumbnails' mean difference (each pixel's largest over its channels), 0-255
CHECKS = ("duplicate", "near_duplicate", "leakage", "tiny_box", "border_box", "double_label", "rare_class")


@dataclass(frozen=True)
class CheckOptions:
    """Thresholds of the checks."""

    duplicates: bool = True  # read every image (hashes); the box and class checks need no image
    tiny_box: float = 4.0  # a box this many pixels or fewer on a side (at the image's own size) is tiny
    border: float = 1.0  # a box within this many pixels of an edge touches the border
    double_iou: float = 0.9  # two boxes of one image overlapping this much are one object labelled twice
    rare_objects: int = 10  # a class with fewer training objects than this is rare
    near_bits: int = 20  # pHash bits two near copies may differ in (re-encoded or resized: up to ~20 of 64)
    near_level: float = 24.0  # ... and all but NEAR_SHARE of their thumbnails' pixels within this many levels
    workers: int | None = None  # image-reading threads (default: the CPUs)


@dataclass(frozen=True)
class Finding:
    """One thing a check found. `image` is an image_url; `other` the second image of a duplicate pair,
    or the other class of a double label; `split` is train, val, or train+val for leakage."""

    check: str
    split: str
    image: str
    detail: str
    other: str = ""
    box: tuple[float, float, float, float] | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}


@dataclass
class CheckReport:
    """Every finding, and how many images each split had."""

    findings: list[Finding] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)
    hashed: bool = False  # whether the duplicate checks ran

    def counts(self) -> dict[str, int]:
        """Findings per check, every check named (0 where none; the duplicate checks only if they ran)."""
        names = CHECKS if self.hashed else tuple(c for c in CHECKS if c not in ("duplicate", "near_duplicate",
                                                                               "leakage"))  # fmt: skip
        counts = dict.fromkeys(names, 0)
        for finding in self.findings:
            counts[finding.check] += 1
        return counts

    def of(self, check: str) -> list[Finding]:
        """The findings of one check."""
        return [f for f in self.findings if f.check == check]

    def to_json(self) -> dict:
        return {"counts": self.counts(), "images": self.images, "findings": [f.to_json() for f in self.findings]}


def check_records(splits: dict[str, Records], options: CheckOptions = CheckOptions()) -> CheckReport:
    """Run every check over `splits` (e.g. {"train": ..., "val": ...}); findings in a stable order."""
    report = CheckReport(images={name: len(records) for name, records in splits.items()}, hashed=options.duplicates)
    for name, records in splits.items():
        report.findings += box_findings(records, name, options)
    report.findings += rare_classes(splits, options.rare_objects)
    if options.duplicates:
        report.findings += duplicate_findings(splits, options)
    return report


def box_findings(records: Records, split: str, options: CheckOptions) -> list[Finding]:
    """Tiny boxes, boxes on the border, and one box labelled twice with different classes."""
    found: list[Finding] = []
    for i in range(len(records)):
        record = records[i]
        boxes = record.boxes.astype(np.float64)
        if not len(boxes):
            continue
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        edge = options.border
        touches = (
            (boxes[:, 0] <= edge)
            | (boxes[:, 1] <= edge)
            | (boxes[:, 2] >= record.width - edge)
            | (boxes[:, 3] >= record.height - edge)
        )
        for k, box in enumerate(boxes):
            name = records.classes[int(record.class_ids[k])]
            where = tuple(round(float(v), 1) for v in box)
            if sides[k] <= options.tiny_box:
                found.append(Finding("tiny_box", split, record.image_url, f"{name} {sides[k]:.1f} px on its short "
                                     "side", box=where))  # fmt: skip
            if touches[k]:
                found.append(Finding("border_box", split, record.image_url, f"{name} touches the border", box=where))
        iou = box_iou(boxes, boxes)
        for a, b in zip(*np.nonzero(np.triu(iou >= options.double_iou, k=1)), strict=True):
            first, second = (records.classes[int(record.class_ids[j])] for j in (a, b))
            if first != second:
                found.append(Finding("double_label", split, record.image_url, f"{first} and {second} on one box "
                                     f"(IoU {iou[a, b]:.2f})", other=second,
                                     box=tuple(round(float(v), 1) for v in boxes[a])))  # fmt: skip
    return found


def rare_classes(splits: dict[str, Records], least: int) -> list[Finding]:
    """Classes with fewer than `least` objects in the first split (training): one finding each."""
    name, records = next(iter(splits.items()))
    counts = np.bincount(records.class_ids, minlength=len(records.classes)) if len(records.classes) else []
    return [
        Finding("rare_class", name, "", f"{cls}: {int(n)} object{'s' if n != 1 else ''} (fewer than {least})")
        for cls, n in zip(records.classes, counts, strict=True)
        if n < least
    ]


@dataclass(frozen=True)
class Fingerprint:
    """What the duplicate checks know of one image."""

    sha256: str
    phash: np.uint64
    thumb: np.ndarray  # (THUMB, THUMB, 3) uint8 RGB


def fingerprint(path: str) -> Fingerprint | None:
    """The image's fingerprint; None when it cannot be read (validate's own checks report that)."""
    from PIL import Image

    try:
        data = Path(path).read_bytes()  # read once: hashed, then decoded from memory
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (THUMB * 4, THUMB * 4))  # JPEG decodes at a fraction of its size: much faster
            thumb = image.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BOX)
    except (OSError, ValueError):
        return None
    return Fingerprint(hashlib.sha256(data).hexdigest(), phash(np.asarray(thumb.convert("L"))), np.asarray(thumb))


def _dct_matrix(n: int) -> np.ndarray:
    k, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    matrix = np.sqrt(2 / n) * np.cos(np.pi * (2 * x + 1) * k / (2 * n))
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix(THUMB)


def phash(thumb: np.ndarray) -> np.uint64:
    """The 64-bit perceptual hash of a THUMB x THUMB greyscale thumbnail."""
    low = (_DCT @ thumb.astype(np.float64) @ _DCT.T)[:8, :8].ravel()
    bits = low > np.median(low[1:])  # the DC term (overall brightness) left out of the median
    return np.uint64(int("".join("1" if b else "0" for b in bits), 2))


def fingerprints(paths: Sequence[str], workers: int | None = None) -> list[Fingerprint | None]:
    """Every image's fingerprint, read on `workers` threads (Pillow decodes without the GIL)."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(fingerprint, paths, chunksize=16))


def duplicate_findings(splits: dict[str, Records], options: CheckOptions) -> list[Finding]:
    """Exact and near copies within each split, and across splits (leakage); one finding per pair,
    pairs within a group of copies reduced to each image against the group's first."""
    owners = [
        (name, str(url), str(path))
        for name, r in splits.items()
        for url, path in zip(r.image_urls, r.paths, strict=True)
    ]
    prints = fingerprints([path for _, _, path in owners], options.workers)
    readable = [i for i, p in enumerate(prints) if p is not None]
    found: list[Finding] = []
    exact: dict[str, list[int]] = defaultdict(list)
    for i in readable:
        exact[prints[i].sha256].append(i)
    same_bytes = set()
    for group in exact.values():
        for i in group[1:]:
            found.append(_pair("duplicate", owners[group[0]], owners[i], "the same file content"))
            same_bytes.add(i)
    near = [i for i in readable if i not in same_bytes]
    for a, b, bits, level in _near_pairs(near, prints, options):
        found.append(_pair("near_duplicate", owners[a], owners[b], f"pHash {bits} bits apart, {level:.1%} of the "
                           "thumbnails' pixels differ"))  # fmt: skip
    return found


def _pair(check: str, first: tuple[str, str, str], second: tuple[str, str, str], detail: str) -> Finding:
    if first[0] != second[0]:  # across splits: the model is scored on what it trained on
        return Finding("leakage", f"{first[0]}+{second[0]}", first[1], f"{check.replace('_', ' ')}: {detail}",
                       other=second[1])  # fmt: skip
    return Finding(check, first[0], first[1], detail, other=second[1])


def thumbs_apart(first: np.ndarray, second: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Pair by pair ((m, THUMB, THUMB, 3) each), over pixels (each its largest channel difference): the
    share more than `level` apart, and the mean. Copies, even resized to half and re-encoded, stay
    under 2% and 5 levels; two pictures of one small shape on like backgrounds differ more in both."""
    pixels = np.abs(first.astype(np.int16) - second.astype(np.int16)).max(axis=3).reshape(len(first), -1)
    return (pixels > level).mean(axis=1), pixels.mean(axis=1)


def _near_pairs(
    indices: Sequence[int], prints: Sequence[Fingerprint | None], options: CheckOptions
) -> Iterable[tuple[int, int, int, float]]:
    """(a, b, hash bits apart, share of thumbnail pixels apart) of every confirmed near pair, a < b, each
    image paired with the first of its copies only."""
    if len(indices) < 2:
        return
    hashes = np.array([prints[i].phash for i in indices], dtype=np.uint64)
    thumbs = np.stack([prints[i].thumb for i in indices])
    rows, cols, bits = [], [], []
    block = 1024  # rows of the pairwise distance matrix at a time: 1024 x n bytes
    for start in range(0, len(hashes), block):
        distance = np.bitwise_count(hashes[start : start + block, None] ^ hashes[None, :])
        row, col = np.nonzero(distance <= options.near_bits)
        ahead = col > row + start
        rows.append(row[ahead] + start)
        cols.append(col[ahead])
        bits.append(distance[row[ahead], col[ahead]])
    a, b, bits = np.concatenate(rows), np.concatenate(cols), np.concatenate(bits)
    # Re-encoding and resizing keep an image's mean colour: pairs whose means differ are not copies,
    # and leaving them out first spares most of the pixel comparisons.
    means = thumbs.reshape(len(thumbs), -1, 3).mean(axis=1)
    alike = np.abs(means[a] - means[b]).max(axis=1) <= options.near_level / 2
    a, b, bits = a[alike], b[alike], bits[alike]
    parts = [thumbs_apart(thumbs[a[i : i + 4096]], thumbs[b[i : i + 4096]], options.near_level)
             for i in range(0, len(a), 4096)]  # fmt: skip
    apart = np.concatenate([share for share, _ in parts]) if parts else np.zeros(0)
    mean = np.concatenate([m for _, m in parts]) if parts else np.zeros(0)
    taken: set[int] = set()
    for k in np.lexsort((b, a)):  # by first image, then second: each copy pairs with its first
        first, second = int(a[k]), int(b[k])
        if apart[k] <= NEAR_SHARE and mean[k] <= NEAR_MEAN and first not in taken and second not in taken:
            taken.add(second)
            yield indices[first], indices[second], int(bits[k]), float(apart[k])
