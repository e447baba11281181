"""Benchmark: how well trainkit's label review finds label errors planted in the demo data, and what
removing what it flags gives back.

Data: `trainkit demo-data --images N --label-noise F` (seed 21): labels.csv with a share F of the
objects corrupted (a quarter each removed, class-swapped, shifted by 40%, spurious; label_noise.csv
says which), labels_clean.csv the truth; and --test-images other clean images (seed 22) that score
every model. Every model is the skeleton (`make demo`'s trainer) at --image-size for --steps steps.
  1. validation   `train` on 80% of the noisy set, validating on the other 20%: the review at the end of
                  training (label_issues.csv) scores those images, which the model never saw; precision
                  and recall of its top suspicions, per kind and overall
  2. folds        `train --folds K` on the whole noisy set: K models, each reviewing the fold it did not
                  learn, so every image is scored out of sample: precision and recall again
  3. review       three models scored on the test images: trained on the noisy set, on the noisy set
                  after the images of (2)'s top suspicions were reviewed (a person corrects what the
                  finder points at: here their true labels), and on the clean set; and the share of
                  the noise's mAP loss the review won back
A suspicion is right when a planted change is at its place (IoU >= 0.5 with the change's box as
labelled, or for a removed object its true box) in the same image, of the matching kind (removed:
missing; swapped: swap; shifted: loose, or spurious + missing; spurious: spurious). "Top" is the
first as many suspicions as there were changes in the images scored.

    .venv/bin/python benchmarks/label_issues.py [--images 300] [--label-noise 0.1] [--folds 3] [--smoke]
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
from smoke import parse_args

from trainkit.geometry.boxes import box_iou
from trainkit.inference.label_issues import KINDS

ROOT = Path(__file__).resolve().parents[1]
MATCHES = {"removed": {"missing"}, "swapped": {"swap"}, "shifted": {"loose", "spurious", "missing"},
           "spurious": {"spurious"}}  # fmt: skip
CORNERS = ("bottomX", "bottomY", "topX", "topY")


def train(images: Path, labels: Path, out: Path, args: argparse.Namespace, *split: str) -> Path:
    """The skeleton trained on `labels` with `split` (--val-labelset, --folds; else no validation), its
    label review on; its output folder."""
    hyper = ["epochs=100000", f"max_steps={args.steps}", "batch_size=8", f"image_size={args.image_size}"]
    settings = [item for kv in hyper for item in ("--set", kv)]
    trainkit("train", "--trainer", str(ROOT / "trainers" / "skeleton"), "--imageset", str(images),
             "--datastore-name", "", "--labelset", str(labels), *(split or ("--val-fraction", "0")), "--output-dir",
             str(out), "--device", "cpu", "--checkpoint-every", "0", "--eval-every", "100000", "--label-issues", "on",
             "--data-report", "off", *settings)  # fmt: skip
    return out


def suspicions(review: Path) -> list[dict]:
    """A label_issues.csv as one dict per suspicion (image_url, kind, score, box, proposal), the worst
    first; none when the review was not written (its model under the review's floor, as in --smoke)."""
    if not review.is_file():
        return []
    found = []
    for url, issues in pd.read_csv(review)[["image_url", "issues"]].itertuples(index=False):
        for issue in literal_eval(issues):
            where = issue["object"] or issue["proposal"]
            found.append({"image_url": url, **issue, "box": [where[c] for c in CORNERS]})
    return sorted(found, key=lambda s: -s["score"])


def changes_in(noise: pd.DataFrame, urls: set[str]) -> list[dict]:
    """The planted changes in these images, each with the boxes a right suspicion may sit on."""
    out = []
    for row in noise[noise.image_url.isin(urls)].to_dict("records"):
        boxes = [[row[c] for c in CORNERS]]
        truth = literal_eval(row["true_box"]) if isinstance(row["true_box"], str) else []
        if truth:  # stored bottomX, topX, bottomY, topY
            boxes.append([truth[0], truth[2], truth[1], truth[3]])
        out.append({**row, "boxes": boxes})
    return out


def score(found: list[dict], changes: list[dict]) -> dict[str, tuple[float, float, int]]:
    """The top len(changes) suspicions against the changes: (precision, recall, n) overall; for each
    suspected kind (missing, spurious, swap, loose) its precision among the top, and for each planted
    kind (removed, swapped, shifted, spurious) the recall of its changes (nan where not defined)."""
    top = found[: len(changes)]

    def right(s: dict, c: dict) -> bool:
        return (s["image_url"] == c["image_url"] and s["kind"] in MATCHES[c["kind"]]
                and box_iou(s["box"], c["boxes"]).max() >= 0.5)  # fmt: skip

    nan = float("nan")
    hits = [any(right(s, c) for c in changes) for s in top]
    seen = [any(right(s, c) for s in top) for c in changes]
    result = {"all": (sum(hits) / len(top) if top else nan, sum(seen) / len(changes) if changes else nan, len(top))}
    for kind in KINDS:
        mine = [hit for s, hit in zip(top, hits, strict=True) if s["kind"] == kind]
        result[f"{kind} (found)"] = (sum(mine) / len(mine) if mine else nan, nan, len(mine))
    for kind in MATCHES:
        mine = [hit for c, hit in zip(changes, seen, strict=True) if c["kind"] == kind]
        result[f"{kind} (planted)"] = (nan, sum(mine) / len(mine) if mine else nan, len(mine))
    return result


def reviewed(noisy: pd.DataFrame, clean: pd.DataFrame, found: list[dict], top: int) -> tuple[pd.DataFrame, int]:
    """The noisy set after a person reviewed the images of the top suspicions and corrected their
    labels (here: the true ones); the number of images reviewed. The finder only points: what it
    is worth is how much of the noise the images it points at hold."""
    images = {s["image_url"] for s in found[:top]}
    truth = clean.set_index("image_url")
    table = noisy.copy()
    for column in ("label", "label_confidence"):
        table[column] = [truth.at[url, column] if url in images else value
                         for url, value in zip(table.image_url, table[column], strict=True)]  # fmt: skip
    return table, len(images)


def map_on(model: Path, test: Path, out: Path) -> tuple[float, float]:
    """mAP@0.5 and mAP@0.5:0.95 of `model` on the clean test images."""
    trainkit("evaluate", "--model", str(model), "--imageset", str(test / "imageset_studio"), "--datastore-name", "",
             "--labelset", str(test / "labels.csv"), "--output-dir", str(out), "--draw", "0")  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics["map_50"], metrics["map"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--label-noise", type=float, default=0.1)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=192)
    args = parse_args(parser, argv, images=24, test_images=6, folds=2, steps=4, image_size=64)
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-issues-") as tmp:
        work = Path(tmp)
        trainkit("demo-data", str(work / "data"), "--images", str(args.images), "--seed", "21", "--label-noise",
                 str(args.label_noise))  # fmt: skip
        trainkit("demo-data", str(work / "test"), "--images", str(args.test_images), "--seed", "22")
        images = work / "data" / "imageset_studio"
        noisy = pd.read_csv(work / "data" / "labels.csv", index_col=0)
        noise = pd.read_csv(work / "data" / "label_noise.csv")
        urls = sorted(noisy.image_url)

        def part(name: str, keep: set[str], table: pd.DataFrame = noisy) -> Path:
            path = work / f"{name}.csv"
            table[table.image_url.isin(keep)].to_csv(path)
            return path

        # 1. validation: the model never saw the 20% its end-of-training review scores.
        val = set(urls[::5])
        run = train(images, part("train80", set(urls) - val), work / "m_val", args, "--val-labelset",
                    str(part("val20", val)))  # fmt: skip
        first = score(suspicions(run / "label_issues.csv"), changes_in(noise, val))
        # 2. folds: every image scored by the model that did not train on it.
        run = train(images, work / "data" / "labels.csv", work / "folds", args, "--folds", str(args.folds))
        found = suspicions(run / "label_issues.csv")
        everything = changes_in(noise, set(urls))
        second = score(found, everything)
        # 3. cleaning: the noisy set less what (2) flagged, against noisy and clean, on clean test images.
        clean_labels = pd.read_csv(work / "data" / "labels_clean.csv", index_col=0)
        fixed, looked_at = reviewed(noisy, clean_labels, found, len(everything))
        maps = {}
        sets = (("noisy", noisy), ("reviewed (finder's top)", fixed), ("clean", clean_labels))
        for n, (name, table) in enumerate(sets):
            run = train(images, part(f"set{n}", set(urls), table), work / f"m_set{n}", args)
            maps[name] = map_on(run / "model", work / "test", work / f"t_set{n}")
    print(f"\ndemo-data --images {args.images} --label-noise {args.label_noise}: {len(noise)} labels changed; "
          f"skeleton {args.image_size} px, {args.steps} steps a model; CPU ({os.cpu_count()} cores)")  # fmt: skip
    print("precision of the top suspicions by the kind suspected, recall of the changes by the kind planted")
    print(f"{'finder on':<28} {'kind':<20} {'n':>4} {'precision':>9} {'recall':>7}")
    for name, result in (("validation 20% (1 model)", first), (f"{args.folds} folds (every image)", second)):
        for kind, (precision, recall, n) in result.items():
            shown = [f"{v:.2f}" if v == v else "-" for v in (precision, recall)]  # v != v: nan
            print(f"{name:<28} {kind:<20} {n:>4} {shown[0]:>9} {shown[1]:>7}")
    noisy_images = noise.image_url.nunique()
    print(f"\nthe images of the top {len(everything)} suspicions reviewed: {looked_at} of {len(urls)} images "
          f"({noisy_images} hold a change)")  # fmt: skip
    print(f"{'trained on':<24} {'test mAP@0.5':>12} {'test mAP':>9}")
    for name, (map_50, map_all) in maps.items():
        print(f"{name:<24} {map_50:>12.3f} {map_all:>9.3f}")
    for metric, i in (("mAP@0.5", 0), ("mAP", 1)):
        lost = maps["clean"][i] - maps["noisy"][i]
        back = (maps["reviewed (finder's top)"][i] - maps["noisy"][i]) / lost if lost > 0 else float("nan")
        print(f"{metric}: lost to the noise {lost:.3f}; won back by the review {back:.0%}" if lost > 0 else
              f"{metric}: lost to the noise {lost:.3f} (none to win back)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
