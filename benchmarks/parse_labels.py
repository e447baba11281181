"""Benchmark: parse a generated label set with trainkit and with the predecessor's way, same run, same file.

Baseline: `pd.read_csv` + `Series.apply(ast.literal_eval)` on `label` and `label_confidence`, which
is what the predecessor's utils did. trainkit: `read_labelset` + `parse_labels` (the table-parsing
stage; images are not looked at, since the file names no real images). The script checks that both
give identical records (per-row object counts, class names, boxes, confidences) and prints a table.
The same objects written as AutoML JSON Lines and as COCO (normalised by a 1920x1080 image) are read
with `read_labels` too, checked to give the same objects, and timed beside them.

    .venv/bin/python benchmarks/parse_labels.py [--rows 1000000] [--seed 0] [--smoke]
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from smoke import parse_args

from trainkit.data.label_sets import read_labels
from trainkit.data.labels import parse_labels
from trainkit.data.tables import read_labelset

SIZE = np.array([1920.0, 1080.0, 1920.0, 1080.0])

# Mostly plain names (the fast path), a few needing escapes or double quotes (the per-row path).
CLASSES = ["car", "person", "bicycle", "traffic light", "bus", "truck", "dog", "stop sign"]
RARE_CLASSES = ["driver's seat", 'say "hi"', "back\\slash"]


def generate(path: Path, rows: int, seed: int) -> None:
    """Write a label set the way the labelling API does: pandas to_csv of lists of dicts."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 7, rows)
    total = int(counts.sum())
    names = np.array(CLASSES, dtype=object)[rng.integers(0, len(CLASSES), total)]
    rare = rng.random(total) < 0.001
    names[rare] = np.array(RARE_CLASSES, dtype=object)[rng.integers(0, len(RARE_CLASSES), int(rare.sum()))]
    x = rng.integers(0, 1920, (total, 2))
    y = np.round(rng.uniform(0, 1080, (total, 2)), 2)
    conf = np.round(rng.uniform(0, 1, total), 4)
    labels, confidences = [], []
    start = 0
    for n in counts.tolist():
        stop = start + n
        labels.append(
            [
                {
                    "type": names[i],
                    "bottomX": int(x[i, 0]),
                    "topX": int(x[i, 1]),
                    "bottomY": y[i, 0].item(),
                    "topY": y[i, 1].item(),
                }
                for i in range(start, stop)
            ]
        )
        confidences.append(conf[start:stop].tolist())
        start = stop
    frame = pd.DataFrame(
        {"image_url": [f"images/{i:07d}.jpg" for i in range(rows)], "label": labels, "label_confidence": confidences}
    )
    frame.to_csv(path)


def baseline(path: Path) -> tuple[pd.Series, pd.Series]:
    """The predecessor's parse."""
    frame = pd.read_csv(path)
    return frame["label"].apply(ast.literal_eval), frame["label_confidence"].apply(ast.literal_eval)


def baseline_arrays(labels: pd.Series, confidences: pd.Series) -> dict[str, np.ndarray]:
    """The baseline's objects in trainkit's record form, for the identity check (not timed)."""
    counts = np.array([len(objs) for objs in labels], np.int64)
    flat = [obj for objs in labels for obj in objs]
    raw = np.array([[o["bottomX"], o["topX"], o["bottomY"], o["topY"]] for o in flat], np.float64).reshape(-1, 4)
    boxes = np.stack([raw[:, :2].min(1), raw[:, 2:].min(1), raw[:, :2].max(1), raw[:, 2:].max(1)], axis=1).reshape(
        -1, 4
    )
    return {
        "counts": counts,
        "names": np.array([o["type"] for o in flat], dtype=object),
        "boxes": boxes,
        "confidences": np.array([c for cs in confidences for c in cs], np.float64),
    }


def write_other_formats(folder: Path, expected: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """The objects as AutoML JSON Lines and as COCO, normalised by SIZE (not timed)."""
    import json

    counts, names, boxes = expected["counts"], expected["names"], expected["boxes"] / SIZE
    offsets = np.concatenate([[0], np.cumsum(counts)])
    lines = []
    for r in range(len(counts)):
        label = [{"label": names[j], "topX": boxes[j, 0], "topY": boxes[j, 1], "bottomX": boxes[j, 2],
                  "bottomY": boxes[j, 3]} for j in range(offsets[r], offsets[r + 1])]  # fmt: skip
        lines.append(json.dumps({"image_url": f"images/{r:07d}.jpg", "label": label}))
    jsonl = folder / "labels.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    classes = {name: i for i, name in enumerate(sorted(set(names)), start=1)}
    coco = {
        "images": [{"id": r + 1, "file_name": f"images/{r:07d}.jpg", "width": 0, "height": 0}
                   for r in range(len(counts))],
        "annotations": [{"id": j + 1, "image_id": int(r) + 1, "category_id": classes[names[j]],
                         "bbox": [boxes[j, 0], boxes[j, 1], boxes[j, 2] - boxes[j, 0], boxes[j, 3] - boxes[j, 1]]}
                        for j, r in enumerate(np.repeat(np.arange(len(counts)), counts))],
        "categories": [{"id": i, "name": name} for name, i in classes.items()],
    }  # fmt: skip
    path = folder / "coco.json"
    path.write_text(json.dumps(coco))
    return jsonl, path


def same_objects(parsed, expected: dict[str, np.ndarray]) -> bool:
    """Counts, names and (normalised, so up to float rounding) boxes agree with the baseline's."""
    return (
        not parsed.issues
        and np.array_equal(parsed.counts, expected["counts"])
        and np.array_equal(parsed.class_names, expected["names"])
        and np.allclose(parsed.boxes * SIZE, expected["boxes"], atol=1e-6)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser, argv, rows=2000)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.csv"
        t = time.perf_counter()
        generate(path, args.rows, args.seed)
        print(f"generated {args.rows} rows ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s")

        t = time.perf_counter()
        table = read_labelset(path)
        parsed = parse_labels(table.label, table.confidence)
        trainkit_s = time.perf_counter() - t

        t = time.perf_counter()
        labels, confidences = baseline(path)
        baseline_s = time.perf_counter() - t

        expected = baseline_arrays(labels, confidences)
        jsonl, coco = write_other_formats(Path(tmp), expected)
        others = {}
        for name, other in (
            ("trainkit: read_labels (AutoML JSON Lines)", jsonl),
            ("trainkit: read_labels (COCO)", coco),
        ):
            t = time.perf_counter()
            read = read_labels(other)
            others[name] = (time.perf_counter() - t, same_objects(read.parsed, expected))

    identical = (
        not parsed.issues
        and np.array_equal(parsed.counts, expected["counts"])
        and np.array_equal(parsed.class_names, expected["names"])
        and np.array_equal(parsed.boxes, expected["boxes"])
        and np.array_equal(parsed.confidences, expected["confidences"])
    )
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    objects = int(expected["counts"].sum())
    print(f"{'parser':<46} {'rows':>9} {'seconds':>8} {'rows/s':>10} {'objects/s':>10} {'vs baseline':>11}")
    timings = [("baseline: pd.read_csv + apply(ast.literal_eval)", baseline_s),
               ("trainkit: read_labelset + parse_labels", trainkit_s),
               *((name, seconds) for name, (seconds, _) in others.items())]  # fmt: skip
    for name, seconds in timings:
        print(f"{name:<46} {args.rows:>9} {seconds:>8.2f} {args.rows / seconds:>10.0f} {objects / seconds:>10.0f} "
              f"{baseline_s / seconds:>10.1f}x")  # fmt: skip
    print(f"identical records: {'yes' if identical else 'NO'} ({objects} objects)")
    agree = all(ok for _, ok in others.values())
    print(f"JSON Lines and COCO give the same objects: {'yes' if agree else 'NO'}")
    return 0 if identical and agree else 1


if __name__ == "__main__":
    sys.exit(main())
