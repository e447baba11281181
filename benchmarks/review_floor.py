"""Benchmark: how good a model must be before its label review is worth reading (the review's floor).

Data: `trainkit demo-data --images N --label-noise F` per --data-seeds, as benchmarks/label_issues.py
makes it (label_noise.csv says which labels were changed). The skeleton trains on 80% of the noisy
set for each of --steps (0: the untrained model), with the review at the end of training scoring the
other 20%, which it never saw, and the floor switched off (REVIEW_FLOOR 0). Per row: the
model's validation mAP@0.5 on those noisy labels (what the floor is compared with), how many
suspicions it wrote, and the precision of its top suspicions (as many as there were changes),
against the share of the reviewed labels that were changed (what flagging labels at random finds).

    .venv/bin/python benchmarks/review_floor.py [--steps 0 25 50 100 200 400] [--data-seeds 21 23] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from ast import literal_eval
from pathlib import Path

import pandas as pd
from inprocess import trainkit
from label_issues import changes_in, score, suspicions
from smoke import parse_args

from trainkit.inference import label_issues

ROOT = Path(__file__).resolve().parents[1]


def review(images: Path, train: Path, val: Path, out: Path, steps: int, image_size: int) -> Path:
    """The skeleton trained for `steps` (0: untrained) on `train`, reviewing `val` at the end; its output folder."""
    hyper = ["epochs=100000", f"max_steps={max(1, steps)}", "batch_size=8", f"image_size={image_size}"]
    if not steps:
        hyper.append("lr=1e-12")  # one step that moves nothing: the model as initialised
    settings = [item for kv in hyper for item in ("--set", kv)]
    trainkit("train", "--trainer", str(ROOT / "trainers" / "skeleton"), "--imageset", str(images),
             "--datastore-name", "", "--labelset", str(train), "--val-labelset", str(val), "--output-dir", str(out),
             "--device", "cpu", "--checkpoint-every", "0", "--eval-every", "100000", "--label-issues", "on",
             "--data-report", "off", *settings)  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--label-noise", type=float, default=0.1)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 25, 50, 100, 200, 400])
    parser.add_argument("--data-seeds", type=int, nargs="+", default=[21, 23])
    parser.add_argument("--image-size", type=int, default=192)
    args = parse_args(parser, argv, images=24, steps=[0, 4], data_seeds=[21], image_size=64)
    label_issues.REVIEW_FLOOR = 0.0  # every review written, whatever the model learned (trainkit runs in-process)
    rows = []
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-floor-") as tmp:
        for seed in args.data_seeds:
            work = Path(tmp) / str(seed)
            trainkit("demo-data", str(work / "data"), "--images", str(args.images), "--seed", str(seed),
                     "--label-noise", str(args.label_noise))  # fmt: skip
            noisy = pd.read_csv(work / "data" / "labels.csv", index_col=0)
            noise = pd.read_csv(work / "data" / "label_noise.csv")
            urls = sorted(noisy.image_url)
            val = set(urls[::5])
            noisy[~noisy.image_url.isin(val)].to_csv(work / "train.csv")
            noisy[noisy.image_url.isin(val)].to_csv(work / "val.csv")
            changes = changes_in(noise, val)
            labels = sum(len(literal_eval(cell)) for cell in noisy[noisy.image_url.isin(val)].label)
            for steps in args.steps:
                out = review(work / "data" / "imageset_studio", work / "train.csv", work / "val.csv",
                             work / f"m{steps}", steps, args.image_size)  # fmt: skip
                map_50 = json.loads((out / "metrics.json").read_text())["val"]["map_50"]
                found = suspicions(out / "label_issues.csv")
                precision = score(found, changes)["all"][0]
                rows.append((seed, steps, map_50, len(found), len(changes), precision, len(changes) / max(1, labels)))
    print(f"\ndemo-data --images {args.images} --label-noise {args.label_noise}; skeleton {args.image_size} px; "
          f"review of the 20% held out; CPU ({os.cpu_count()} cores)")  # fmt: skip
    print(f"{'data seed':>9} {'steps':>6} {'val mAP@0.5':>11} {'suspicions':>10} {'changes':>7} "
          f"{'top precision':>13} {'at random':>9}")  # fmt: skip
    for seed, steps, map_50, found, changed, precision, chance in rows:
        shown = f"{precision:.2f}" if precision == precision else "-"  # nan: no suspicion
        print(f"{seed:>9} {steps:>6} {map_50:>11.3f} {found:>10} {changed:>7} {shown:>13} {chance:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
