"""Benchmark: what the detectors learn on a fixed demo set, held-out mAP against steps and wall time, one run.

Data: `trainkit demo-data --images 500 --seed 7` (320x240 shapes), 20% of the images held out
(split seed 0); every row trains with `trainkit train` on --device (the CPU by default) at 192 px,
batch 8, for the same number of epochs, and is evaluated on the held-out images after every epoch. Rows:
  skeleton                  the template's defaults: GroupNorm, 64 sampled RoIs a image at 50%
                            positives, AdamW 2e-3 with a 20-step warm-up (what `make demo` trains)
  skeleton, BatchNorm       the same with BatchNorm
  skeleton, 512 RoIs @25%   the same with torchvision's RoI sampling (made for COCO)
  detector from scratch     MobileNetV3-Large FPN Faster R-CNN, its defaults, no weights
  detector from COCO        the same from torchvision's COCO weights, when the torch hub cache holds
                            them (`trainkit weights download FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1`)

With --archs, a second table: every arch of the detector and family of hf_detector, each for a
fixed CPU-time budget (its steps from a probe run's measured seconds a step), at --image-size:
  (a) scratch       from scratch on demo data of seed 7 (--images, 20% held out)
  (b) transfer      fine-tuned from (a)'s model on 40 images of demo data of seed 8, against the same
                    40 images from scratch, each for --transfer-budget; both scored on 60 other
                    seed-8 images
  (c) COCO          fine-tuned from the published COCO checkpoint on the same 40 images, where the
                    cache holds it ("not cached" otherwise)
The hf rows train the published small architectures (R18-vd, D-FINE N; benchmarks/published_architectures.py)
from fresh weights, not transformers' larger default configurations; the Faster R-CNN rows sample 64
RoIs an image at 50% positives (rois_per_image, positive_fraction), as the skeleton does.

    .venv/bin/python benchmarks/quality.py [--epochs 12] [--images 500] [--smoke]
    .venv/bin/python benchmarks/quality.py --archs [--budget 300] [--transfer-budget 120] [--only-archs ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from inprocess import trainkit
from smoke import parse_args

ROOT = Path(__file__).resolve().parents[1]
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


def train(row: Row, data: Path, out: Path, epochs: int, image_size: int, device: str) -> Result:
    """One `trainkit train` run; its held-out mAP after every epoch, from its MLflow store."""
    hyper = [f"epochs={epochs}", "batch_size=8", f"image_size={image_size}", *row.settings]
    command = [
        "train", "--trainer", str(ROOT / "trainers" / row.trainer),
        "--imageset", str(data / "imageset_studio"), "--datastore-name", "", "--labelset", str(data / "labels.csv"),
        "--val-fraction", "0.2", "--output-dir", str(out), "--device", device, "--log-every", "50",
        "--checkpoint-every", "0", *[item for kv in hyper for item in ("--set", kv)],
    ]  # fmt: skip
    start = time.perf_counter()
    trainkit(*command)
    seconds = time.perf_counter() - start
    from mlflow import MlflowClient

    record = json.loads((out / "run.json").read_text())
    client = MlflowClient(tracking_uri=record["mlflow_tracking_uri"])
    history = {
        name: {m.step: m.value for m in client.get_metric_history(record["mlflow_run_id"], f"val/{name}")}
        for name in ("map_50", "map")
    }
    curve = [(step, history["map_50"][step], history["map"].get(step, 0.0)) for step in sorted(history["map_50"])]
    return Result(row, seconds, json.loads((out / "metrics.json").read_text())["step"], curve)


@dataclass(frozen=True)
class ArchRow:
    """An arch or family: its trainer, the settings that pick it, and its published COCO weights."""

    name: str
    trainer: str
    settings: tuple[str, ...]
    coco: str  # named weights (torchvision) or hf:ORG/NAME@REVISION
    hf_arch: str = ""  # hf_detector: from scratch, the published small architecture of this arch

    def scratch(self, work: Path) -> list[str]:
        """The settings that train this row from fresh weights."""
        if not self.hf_arch:
            return [*self.settings, "weights="]
        from published_architectures import write_folder

        folder = work / "architecture"
        if not folder.is_dir():
            write_folder(self.hf_arch, folder)
        # From scratch the backbone learns as fast as the rest (the factor is for pretrained backbones),
        # and at 5x the fine-tuning rate: D-FINE N overfitting 8 demo images for 200 steps found 8 of their
        # 17 objects at 5e-4, none at 1e-4, 9 at 1e-3 and 1 at 2e-3 (5e-4: as good as 1e-3, further from the
        # rate where it falls apart).
        return [*self.settings, f"weights={folder}", "scratch=true", "backbone_lr_factor=1", "lr=5e-4"]


# Faster R-CNN samples 64 RoIs an image, half of them positive (torchvision's 512 at 25% is COCO's):
# from scratch its box head learns on a small set only so, and a CPU step costs a third.
_FEW_ROIS = ("rois_per_image=64", "positive_fraction=0.5")
ARCH_ROWS = (
    *(ArchRow(a, "detector", (f"arch={a}", *extra), c) for a, c, extra in (
        ("fasterrcnn_mobilenet_v3_large_fpn", "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1", _FEW_ROIS),
        ("fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1", _FEW_ROIS),
        ("retinanet_resnet50_fpn_v2", "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1", ()),
        ("fcos_resnet50_fpn", "FCOS_ResNet50_FPN_Weights.COCO_V1", ()),
        ("ssdlite320_mobilenet_v3_large", "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1", ()),
    )),
    ArchRow("hf rt_detr (R18-vd)", "hf_detector", (), "hf:PekingU/rtdetr_r18vd@main", "rt_detr"),
    ArchRow("hf rt_detr_v2 (R18-vd)", "hf_detector", (), "hf:PekingU/rtdetr_v2_r18vd@main", "rt_detr_v2"),
    ArchRow("hf d_fine (N)", "hf_detector", (), "hf:ustc-community/dfine-nano-coco@main", "d_fine"),
)  # fmt: skip


DEVICE = ["--device", "cpu"]  # main() sets --device's


def _run(trainer: str, data: Path, labels: Path, out: Path, settings: list[str], extra: list[str]) -> dict:
    """One `trainkit train` on --device; its metrics.json."""
    command = [
        "train", "--trainer", str(ROOT / "trainers" / trainer), "--imageset", str(data),
        "--datastore-name", "", "--labelset", str(labels), "--output-dir", str(out), *DEVICE,
        "--log-every", "1", "--checkpoint-every", "0", "--eval-every", "100000", *extra,
        *[item for kv in settings for item in ("--set", kv)],
    ]  # fmt: skip
    trainkit(*command)
    return json.loads((out / "metrics.json").read_text())


def _seconds_a_step(trainer: str, data: Path, out: Path, settings: list[str]) -> float:
    """A probe run's median seconds a training step (its first steps left out: set-up, first allocations)."""
    from mlflow import MlflowClient

    _run(trainer, data / "imageset_studio", data / "labels.csv", out, [*settings, "max_steps=6"], [])
    record = json.loads((out / "run.json").read_text())
    client = MlflowClient(tracking_uri=record["mlflow_tracking_uri"])
    times = [m.value for m in client.get_metric_history(record["mlflow_run_id"], "time/step_s") if m.step > 2]
    return sorted(times)[len(times) // 2]


def _split(data: Path, train: int) -> tuple[Path, Path]:
    """The demo set's labels as two files: its first `train` images, and the rest."""
    import pandas as pd

    table = pd.read_csv(data / "labels.csv")
    images = sorted(table.image_url.unique())
    first, rest = data / "first.csv", data / "rest.csv"
    table[table.image_url.isin(images[:train])].to_csv(first, index=False)
    table[~table.image_url.isin(images[:train])].to_csv(rest, index=False)
    return first, rest


def _cached(spec: str) -> bool:
    from trainkit.hf_weights import is_hub, resolve_hub
    from trainkit.weights import named_weights

    if not is_hub(spec):
        return named_weights(spec).path().is_file()
    try:
        resolve_hub(spec)
    except Exception:  # not baked: the row says so
        return False
    return True


def arch_table(args: argparse.Namespace) -> int:
    """The --archs table (see the module doc)."""
    rows = [r for r in ARCH_ROWS if not args.only_archs or r.name in args.only_archs]
    base = ["batch_size=8", f"image_size={args.image_size}", "epochs=100000", "warmup_steps=20"]
    print(f"archs: {args.image_size} px, batch 8, budget {args.budget:.0f} s (a), {args.transfer_budget:.0f} s (b, c); "
          f"{_where(args.device)}; held-out mAP@0.5 / mAP")  # fmt: skip
    print(f"{'row':<36} {'s/step':>7} {'(a) scratch':>14} {'(b) transfer':>14} {'(b) scratch 40':>15} {'(c) COCO':>14}")
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-archs-") as tmp:
        root = Path(tmp)
        for seed, images, name in ((7, args.images, "a"), (8, 100, "b")):
            trainkit("demo-data", str(root / name), "--images", str(images), "--seed", str(seed))
        b_train, b_rest = _split(root / "b", 40)
        b = ["--val-labelset", str(b_rest)]
        for row in rows:
            work = root / row.name.replace(" ", "_")
            scratch = [*base, *row.scratch(work)]
            # A smoke run takes the fewest steps, so it needs no probe to count them.
            per_step = float("inf") if args.smoke else _seconds_a_step(row.trainer, root / "a", work / "probe", scratch)
            steps = max(5, int(args.budget / per_step))
            transfer_steps = max(5, int(args.transfer_budget / per_step))
            a = _run(row.trainer, root / "a" / "imageset_studio", root / "a" / "labels.csv", work / "a",
                     [*scratch, f"max_steps={steps}"], ["--val-fraction", "0.2"])  # fmt: skip
            images_b = root / "b" / "imageset_studio"
            tuned = _run(row.trainer, images_b, b_train, work / "b_tuned",
                         [*base, *row.settings, f"weights={work / 'a'}", f"max_steps={transfer_steps}"], b)  # fmt: skip
            alone = _run(
                row.trainer, images_b, b_train, work / "b_scratch", [*scratch, f"max_steps={transfer_steps}"], b
            )
            coco = "not cached"
            if _cached(row.coco):
                weights = f"torchvision:{row.coco}" if row.trainer == "detector" else row.coco
                done = _run(row.trainer, images_b, b_train, work / "c",
                            [*base, *row.settings, f"weights={weights}", f"max_steps={transfer_steps}"], b)  # fmt: skip
                coco = _score(done)
            print(f"{row.name:<36} {per_step:>7.2f} {_score(a):>14} {_score(tuned):>14} {_score(alone):>15} {coco:>14}",
                  flush=True)  # fmt: skip
    return 0


def _where(device: str) -> str:
    if device == "cuda":
        import torch

        return f"GPU ({torch.cuda.get_device_name()})"
    return f"CPU ({os.cpu_count()} cores)"


def _score(metrics: dict) -> str:
    return f"{metrics['val']['map_50']:.3f} / {metrics['val']['map']:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--only", nargs="+", metavar="N", type=int, help="row numbers to run (1-based)")
    parser.add_argument("--archs", action="store_true", help="the second table: every arch and family (see above)")
    parser.add_argument("--budget", type=float, default=300, help="--archs: seconds of training for (a)")
    parser.add_argument("--transfer-budget", type=float, default=120, help="--archs: seconds for (b) and (c)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where every run trains")
    parser.add_argument("--only-archs", nargs="+", choices=[r.name for r in ARCH_ROWS], help="--archs: these rows")
    args = parse_args(parser, argv, images=20, epochs=1, image_size=64, only=[1, 4], budget=3, transfer_budget=2)
    DEVICE[1] = args.device
    if args.archs:
        if args.smoke and not args.only_archs:
            args.only_archs = ["ssdlite320_mobilenet_v3_large", "hf d_fine (N)"]
        return arch_table(args)

    from trainkit.weights import named_weights

    rows = [row for i, row in enumerate(ROWS, 1) if not args.only or i in args.only]
    skipped = [row for row in rows if row.needs and not named_weights(row.needs).path().is_file()]
    results = []
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-quality-") as tmp:
        data = Path(tmp) / "data"
        trainkit("demo-data", str(data), "--images", str(args.images), "--seed", "7")
        for i, row in enumerate(rows):
            if row not in skipped:
                results.append(train(row, data, Path(tmp) / f"out{i}", args.epochs, args.image_size, args.device))

    held_out = round(args.images * 0.2)
    print(f"\ndemo-data --images {args.images} --seed 7: {args.images - held_out} trained on, {held_out} held out; "
          f"{args.image_size} px, batch 8, {args.epochs} epochs; {_where(args.device)}")  # fmt: skip
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
