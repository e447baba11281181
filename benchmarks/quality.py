"""Benchmark: what the detectors learn on a fixed demo set, held-out mAP against steps and wall time, one run.

Data: `trainkit demo-data --images 500 --seed 7` (320x240 shapes), 20% of the images held out
(split seed 0); every row trains with `trainkit train` on the CPU at 192 px, batch 8, for the same
number of epochs, and is evaluated on the held-out images after every epoch. Rows:
  skeleton                  the template's defaults: GroupNorm, 64 sampled RoIs a image at 50%
                            positives, AdamW 2e-3 with a 20-step warm-up (what `make demo` trains)
  skeleton, BatchNorm       the same with BatchNorm
  skeleton, 512 RoIs @25%   the same with torchvision's RoI sampling (made for COCO)
  detector from scratch     MobileNetV3-Large FPN Faster R-CNN, its defaults, no weights
  detector from COCO        the same from torchvision's COCO weights, when the torch hub cache holds
                            them (`trainkit weights download FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1`)

    .venv/bin/python benchmarks/quality.py [--epochs 12] [--images 500] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from smoke import parse_args

ROOT = Path(__file__).resolve().parents[1]
TRAINKIT = Path(sys.executable).with_name("trainkit")
COCO = "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1"


@dataclass
class Row:
    name: str
    trainer: str
    settings: tuple[str, ...] = ()
    needs: str | None = None  # named weights the row needs in the cache


ROWS = (
    Row("skeleton (GroupNorm, 64 RoIs @50%)", "skeleton"),
    Row("skeleton, BatchNorm", "skeleton", ("norm=batch",)),
    Row("skeleton, 512 RoIs @25% (torchvision's)", "skeleton", ("rois_per_image=512", "positive_fraction=0.25")),
    Row("detector from scratch (MobileNetV3 FPN)", "detector", ("weights=",)),
    Row("detector from COCO weights (its default)", "detector", needs=COCO),
)


@dataclass
class Result:
    row: Row
    seconds: float
    steps: int
    curve: list[tuple[int, float, float]]  # (step, mAP@0.5, mAP) after each epoch


def train(row: Row, data: Path, out: Path, epochs: int, image_size: int) -> Result:
    """One `trainkit train` run; its held-out mAP after every epoch, from its MLflow store."""
    hyper = [f"epochs={epochs}", "batch_size=8", f"image_size={image_size}", *row.settings]
    command = [
        str(TRAINKIT), "train", "--trainer", str(ROOT / "trainers" / row.trainer),
        "--imageset", str(data / "imageset_studio"), "--datastore-name", "", "--labelset", str(data / "labels.csv"),
        "--val-fraction", "0.2", "--output-dir", str(out), "--device", "cpu", "--log-every", "50",
        "--checkpoint-every", "0", *[item for kv in hyper for item in ("--set", kv)],
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "TRAINKIT_TRAINER": ""}
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{row.name}: trainkit train exited {run.returncode}:\n{run.stderr[-3000:]}")
    from mlflow import MlflowClient

    record = json.loads((out / "run.json").read_text())
    client = MlflowClient(tracking_uri=record["mlflow_tracking_uri"])
    history = {
        name: {m.step: m.value for m in client.get_metric_history(record["mlflow_run_id"], f"val/{name}")}
        for name in ("map_50", "map")
    }
    curve = [(step, history["map_50"][step], history["map"].get(step, 0.0)) for step in sorted(history["map_50"])]
    return Result(row, seconds, json.loads((out / "metrics.json").read_text())["step"], curve)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--only", nargs="+", metavar="N", type=int, help="row numbers to run (1-based)")
    args = parse_args(parser, argv, images=20, epochs=1, image_size=64, only=[1, 4])

    from trainkit.weights import named_weights

    rows = [row for i, row in enumerate(ROWS, 1) if not args.only or i in args.only]
    skipped = [row for row in rows if row.needs and not named_weights(row.needs).path().is_file()]
    results = []
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-quality-") as tmp:
        data = Path(tmp) / "data"
        subprocess.run([str(TRAINKIT), "demo-data", str(data), "--images", str(args.images), "--seed", "7"],
                       check=True, capture_output=True)  # fmt: skip
        for i, row in enumerate(rows):
            if row not in skipped:
                results.append(train(row, data, Path(tmp) / f"out{i}", args.epochs, args.image_size))

    held_out = round(args.images * 0.2)
    print(f"\ndemo-data --images {args.images} --seed 7: {args.images - held_out} trained on, {held_out} held out; "
          f"{args.image_size} px, batch 8, {args.epochs} epochs; CPU ({os.cpu_count()} cores)")  # fmt: skip
    marks = sorted({max(1, round(args.epochs * f)) for f in (0.25, 0.5, 1.0)})
    columns = " ".join(f"{f'mAP@.5 ep{m}':>12}" for m in marks)
    print(f"{'row':<42} {'steps':>6} {'seconds':>8} {columns} {'mAP':>7}")
    for r in results:
        cells = " ".join(f"{r.curve[m - 1][1]:>12.3f}" if len(r.curve) >= m else f"{'-':>12}" for m in marks)
        final = r.curve[-1][2] if r.curve else float("nan")
        print(f"{r.row.name:<42} {r.steps:>6} {r.seconds:>8.0f} {cells} {final:>7.3f}")
    for row in skipped:
        print(f"{row.name:<42} skipped: {row.needs} is not in the cache (trainkit weights download {row.needs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
