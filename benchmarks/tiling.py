"""Benchmark: small objects in large images, learned and found on whole images or on tiles, side by side.

Data: `trainkit demo-data --kind scenes` (1600x1200 images, most objects 12-32 px, a few 160-400 px):
--images for training (seed 11; 10% of them held out to pick the best model) and --test-images
others (seed 12) that no run sees before `trainkit evaluate`. Every run trains the skeleton from
scratch with `trainkit train` on the CPU at the same image_size, batch 8, for the same number of
optimiser steps:
  whole image           the image resized to image_size (what trainkit did before tiling)
  tiles 3x2             only the six overlapping tiles (overlap 0.25), each resized to image_size
  tiles 3x2 + whole     the tiles and the whole image (trainkit's default when tiling)
and two more rows evaluate a model above another way, without training again:
  whole image, tiled prediction   the whole-image model predicting on tiles + whole image (AutoML's
                                  "tiling at inference only", SAHI's sliced inference)
  tiles 3x2 + whole, NMM merge    SAHI's greedy merging instead of class-wise NMS
Columns: held-out mAP@0.5 and mAP, AP of small (< 32^2 px) and large (> 96^2 px) objects (COCO's
sizes, torchmetrics), training steps/s (the harness's logged step times) and prediction images/s
(`trainkit predict` over the test images, decoding included). With several --seeds every run
trains once per seed, and the spread between seeds is printed as the noise.

    .venv/bin/python benchmarks/tiling.py [--images 300] [--steps 600] [--image-size 384] [--seeds 0 1] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from inprocess import trainkit
from smoke import parse_args

ROOT = Path(__file__).resolve().parents[1]
GRID = "3x2"


@dataclass(frozen=True)
class Row:
    name: str
    train: str  # key of the training run
    settings: tuple[str, ...] = ()  # hyperparameters of that run
    predict: tuple[str, ...] = ()  # `trainkit evaluate` / `predict` options


RUNS = {
    "whole": (),
    "tiles": (f"tile_grid={GRID}", "tile_whole=false"),
    "tiles+whole": (f"tile_grid={GRID}",),
}
ROWS = (
    Row("whole image", "whole"),
    Row(f"tiles {GRID}", "tiles"),
    Row(f"tiles {GRID} + whole", "tiles+whole"),
    Row("whole image, tiled prediction", "whole", predict=("--tile-grid", GRID)),
    Row(f"tiles {GRID} + whole, NMM merge", "tiles+whole", predict=("--tile-merge", "nmm")),
)


@dataclass
class Result:
    row: Row
    seed: int
    metrics: dict[str, float]
    steps_per_s: float
    images_per_s: float
    extra: dict[str, float] = field(default_factory=dict)


def train(name: str, seed: int, data: Path, out: Path, args: argparse.Namespace) -> float:
    """One training run; its steps per second (from the harness's logged step and data times)."""
    hyper = ["epochs=1000", f"max_steps={args.steps}", "batch_size=8", f"image_size={args.image_size}",
             f"seed={seed}", *RUNS[name]]  # fmt: skip
    printed = trainkit(
        "train", "--trainer", str(ROOT / "trainers" / "skeleton"), "--imageset", str(data / "imageset_studio"),
        "--datastore-name", "", "--labelset", str(data / "labels.csv"), "--val-fraction", "0.1",
        "--output-dir", str(out), "--device", "cpu", "--log-every", "10", "--checkpoint-every", "0",
        "--eval-every", str(_eval_every(name, args)), *[item for kv in hyper for item in ("--set", kv)],
    )  # fmt: skip
    times = [float(d) + float(s) for d, s in re.findall(r"data ([\d.]+)s step ([\d.]+)s", printed)]
    return 1.0 / statistics.mean(times) if times else float("nan")


def _eval_every(name: str, args: argparse.Namespace) -> int:
    """Epochs between validations, so every run validates about four times whatever its epoch length."""
    windows = 1 if name == "whole" else 6 + ("whole" in name)
    epoch_steps = max(1, round(args.images * 0.9 * windows / 8))
    return max(1, args.steps // epoch_steps // 4)


def measure(row: Row, seed: int, model: Path, test: Path, out: Path) -> Result:
    """Held-out metrics (`trainkit evaluate`) and prediction speed (`trainkit predict`) of one row."""
    images = ["--imageset", str(test / "imageset_studio"), "--datastore-name", ""]
    trainkit("evaluate", "--model", str(model), *images, "--labelset", str(test / "labels.csv"),
             "--output-dir", str(out / "evaluate"), "--draw", "0", "--device", "cpu", *row.predict)  # fmt: skip
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    trainkit("predict", "--model", str(model), *images, "--output-dir", str(out / "predict"), "--draw", "4",
             "--device", "cpu", *row.predict)  # fmt: skip
    summary = json.loads((out / "predict" / "predict.json").read_text())
    return Result(row, seed, metrics, 0.0, summary["images"] / max(summary["seconds"], 1e-9))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="training scenes (10%% of them validate)")
    parser.add_argument("--test-images", type=int, default=60, help="held-out scenes that evaluate every run")
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps of every run")
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train every run once per seed")
    parser.add_argument("--keep", type=Path, help="keep the data and runs in this folder")
    args = parse_args(parser, argv, images=10, test_images=3, steps=4, image_size=64, seeds=[0])

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-tiling-") as tmp:
        work = args.keep or Path(tmp)
        train_data, test_data = work / "train", work / "test"
        for folder, count, seed in ((train_data, args.images, 11), (test_data, args.test_images, 12)):
            trainkit(
                "demo-data", str(folder), "--kind", "scenes", "--images", str(count), "--seed", str(seed), "--force"
            )
        # A smoke run leaves out the tiles-only run: the tiles + whole run takes the same code paths.
        runs = [name for name in RUNS if not (args.smoke and name == "tiles")]
        for seed in args.seeds:
            speeds = {}
            for name in runs:
                speeds[name] = train(name, seed, train_data, work / f"{name}-{seed}", args)
            for i, row in enumerate(r for r in ROWS if r.train in runs):
                result = measure(row, seed, work / f"{row.train}-{seed}" / "model", test_data, work / f"m{i}-{seed}")
                result.steps_per_s = speeds[row.train] if not row.predict else float("nan")
                results.append(result)
        _print(results, args)
    return 0


def _print(results: list[Result], args: argparse.Namespace) -> None:
    print(f"\ndemo-data --kind scenes: {args.images} training images (10% validate), {args.test_images} test images; "
          f"skeleton, {args.image_size} px, batch 8, {args.steps} steps; seeds {args.seeds}; "
          f"CPU ({os.cpu_count()} cores)")  # fmt: skip
    print(f"{'row':<34} {'seed':>4} {'mAP@.5':>7} {'mAP':>7} {'AP small':>9} {'AP large':>9} {'steps/s':>8} "
          f"{'images/s':>9}")  # fmt: skip
    for r in results:
        m = r.metrics
        print(f"{r.row.name:<34} {r.seed:>4} {m['map_50']:>7.3f} {m['map']:>7.3f} {m.get('map_small', -1):>9.3f} "
              f"{m.get('map_large', -1):>9.3f} {r.steps_per_s:>8.2f} {r.images_per_s:>9.2f}")  # fmt: skip

    def mean(row: Row, key: str) -> float:
        return statistics.mean(r.metrics.get(key, 0.0) for r in results if r.row == row)

    whole, tiled = ROWS[0], ROWS[2]
    print(f"\ntiles {GRID} + whole against whole image (mean over seeds):")
    for key, label in (("map_50", "mAP@0.5"), ("map_small", "AP small"), ("map_large", "AP large")):
        base, new = mean(whole, key), mean(tiled, key)
        ratio = f"{new / base:.1f}x" if base > 0 else "n/a (whole image: 0)"
        print(f"  {label:<9} {base:.3f} -> {new:.3f}  ({ratio})")
    speed = {row: statistics.mean(r.images_per_s for r in results if r.row == row) for row in (whole, tiled)}
    print(f"  prediction time per image: {speed[whole] / speed[tiled]:.1f}x the whole image's "
          f"({speed[whole]:.2f} -> {speed[tiled]:.2f} images/s)")  # fmt: skip
    if len(args.seeds) > 1:
        print("noise (largest minus smallest over seeds):")
        for row in ROWS:
            keys = ("map_50", "map_small", "map_large")
            spread = {key: [r.metrics.get(key, 0.0) for r in results if r.row == row] for key in keys}
            print(f"  {row.name:<34} " + ", ".join(f"{k} {max(v) - min(v):.3f}" for k, v in spread.items()))


if __name__ == "__main__":
    sys.exit(main())
