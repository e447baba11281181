"""Benchmark: every detector trainkit trains, side by side: size and CPU speed, torch against onnxruntime.

Rows: the detector trainer's torchvision archs and the hf_detector trainer's families (transformers'
default configuration of each: RT-DETR and RT-DETRv2 with a ResNet-50-vd, D-FINE with its HGNetV2),
each at the same input size, untrained but seeded (speed does not depend on what a model learned),
for three classes. Per row: parameters, the exported ONNX file's size, and on the CPU the median
milliseconds for one image and images/s in batches, torch (trainkit's predictor) against onnxruntime
(the exported model.onnx), answers of every score asked for.

    .venv/bin/python benchmarks/models.py [--size 320] [--images 16] [--rounds 3] [--only ARCH ...] [--smoke]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from smoke import parse_args

from trainkit.classmap import ClassMap
from trainkit.data.demo import write_demo_dataset
from trainkit.detection_archs import ARCHS
from trainkit.inference.images import to_array
from trainkit.inference.onnx_export import export_onnx
from trainkit.inference.onnx_predictor import OnnxPredictor
from trainkit.inference.package import build_model_dir
from trainkit.inference.predictor import load_predictor
from trainkit.inference.settings import ModelSettings
from trainkit.params import parse_params
from trainkit.training.discovery import load_trainer

ROOT = Path(__file__).resolve().parents[1]
HF_FAMILIES = ("rt_detr", "rt_detr_v2", "d_fine")
ROWS = {
    **{arch: ("detector", {"arch": arch, "weights": ""}) for arch in ARCHS},
    **{f"hf {family}": ("hf_detector", {"arch": family, "weights": ""}) for family in HF_FAMILIES},
}
SMOKE_ROWS = ("ssdlite320_mobilenet_v3_large", "hf d_fine")


def build(name: str, size: int, folder: Path) -> Path:
    """The row's model, untrained, seeded, saved as a trainkit model folder."""
    trainer_name, overrides = ROWS[name]
    torch.manual_seed(0)
    loaded = load_trainer(str(ROOT / "trainers" / trainer_name))
    params = parse_params(loaded.trainer.Params, {**overrides, "image_size": size})
    classes = ClassMap(("circle", "square", "triangle"))
    model = loaded.trainer.build_model(params, classes).eval()
    settings = ModelSettings.of(loaded.trainer, loaded.module.__name__, params)
    return build_model_dir(folder, model, settings, classes, loaded.source)


def measure(predictor, arrays: list[np.ndarray], batch: int, rounds: int) -> tuple[float, float]:
    """(median ms for one image, best images/s in batches of `batch`)."""

    def one() -> float:
        times = []
        for array in arrays:
            start = time.perf_counter()
            predictor.predict([array], 0.0)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    def batched() -> float:
        start = time.perf_counter()
        for i in range(0, len(arrays), batch):
            predictor.predict(arrays[i : i + batch], 0.0)
        return len(arrays) / (time.perf_counter() - start)

    predictor.predict(arrays[:batch], 0.0)  # warm-up: first-call allocations, onnxruntime's graph set-up
    return min(one() for _ in range(rounds)), max(batched() for _ in range(rounds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320, help="input side in pixels, every row")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=sorted(ROWS), help="these rows (default: all)")
    args = parse_args(parser, argv, images=4, rounds=1, size=64)
    names = args.only or (SMOKE_ROWS if args.smoke else tuple(ROWS))
    machine = platform.processor() or platform.machine()
    print(f"models benchmark: {args.size} px, {args.images} demo images (320x240), batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads, {machine}, best of {args.rounds}")  # fmt: skip
    header = f"{'row':<36} {'params M':>8} {'onnx MB':>8} {'torch ms':>9} {'ort ms':>7} {'torch img/s':>11} "
    print(header + f"{'ort img/s':>9} {'ort vs torch':>12}")
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-models-") as scratch:
        root = Path(scratch)
        demo = write_demo_dataset(root / "demo", images=args.images, seed=3)
        arrays = [to_array(p) for p in sorted(p for p in demo.imageset_studio.rglob("*") if p.is_file())]
        for name in names:
            predictor = load_predictor(build(name, args.size, root / name / "model"), "cpu")
            exported_file = export_onnx(predictor, root / name / "model.onnx")
            exported = OnnxPredictor(exported_file)
            params = sum(p.numel() for p in predictor.model.parameters()) / 1e6
            torch_ms, torch_rate = measure(predictor, arrays, args.batch_size, args.rounds)
            ort_ms, ort_rate = measure(exported, arrays, args.batch_size, args.rounds)
            megabytes = exported_file.stat().st_size / 1e6
            print(f"{name:<36} {params:>8.1f} {megabytes:>8.1f} {torch_ms:>9.1f} {ort_ms:>7.1f} {torch_rate:>11.2f} "
                  f"{ort_rate:>9.2f} {torch_ms / ort_ms:>11.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
