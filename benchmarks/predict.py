"""Benchmark: `trainkit predict` against a plain loop over the same images and model; onnxruntime against torch.

Rows, one run, the same images (demo shapes, 320x240 JPEG/PNG) and the same model (the chosen
trainer's, untrained but seeded: speed does not depend on what it learned):
  plain loop           PIL decode + torchvision transforms.v2 (Resize to S, antialiased) + the model,
                       batches of --batch-size, in one process: what a user writes by hand
  trainkit predict     its prediction phase (the DALI loader on the CPU, the trainer's predict, answers
                       scaled back), and the whole command (start-up, model loading, writing files)
  per image            torch (trainkit's predictor) against onnxruntime (the exported model.onnx) on
                       one image at a time and on batches, CPU only

    .venv/bin/python benchmarks/predict.py [--trainer skeleton|detector] [--images 200] [--rounds 3] [--smoke]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from smoke import parse_args

from trainkit.classmap import ClassMap
from trainkit.data.demo import write_demo_dataset
from trainkit.inference.images import to_array
from trainkit.inference.onnx_export import export_onnx
from trainkit.inference.onnx_predictor import OnnxPredictor
from trainkit.inference.package import build_model_dir
from trainkit.inference.predict import PredictConfig, run_predict
from trainkit.inference.predictor import load_predictor
from trainkit.inference.settings import ModelSettings
from trainkit.params import parse_params
from trainkit.training.discovery import load_trainer

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"skeleton": 192, "detector": 320}


def build(trainer: str, folder: Path) -> Path:
    torch.manual_seed(0)
    loaded = load_trainer(str(ROOT / "trainers" / trainer))
    overrides = {"image_size": SIZES[trainer], **({"weights": ""} if trainer == "detector" else {})}
    params = parse_params(loaded.trainer.Params, overrides)
    classes = ClassMap(("circle", "square", "triangle"))
    model = loaded.trainer.build_model(params, classes).eval()
    settings = ModelSettings.of(loaded.trainer, loaded.module.__name__, params)
    return build_model_dir(folder / "model", model, settings, classes, loaded.source)


def plain_loop(model: torch.nn.Module, paths: list[Path], size: int, batch: int) -> float:
    """Seconds for PIL + transforms.v2 + model over every image."""
    from torchvision.transforms import v2

    transform = v2.Compose(
        [v2.ToImage(), v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, scale=True)]
    )
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            images = [transform(Image.open(p).convert("RGB")) for p in paths[i : i + batch]]
            model(images)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer", choices=sorted(SIZES), default="skeleton")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parse_args(parser, argv, images=16, rounds=1)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-predict-") as scratch:
        root = Path(scratch)
        demo = write_demo_dataset(root / "demo", images=args.images, seed=3)
        paths = sorted(p for p in demo.imageset_studio.rglob("*") if p.is_file())
        folder = build(args.trainer, root)
        predictor = load_predictor(folder, "cpu")
        onnx_file = export_onnx(predictor, root / "model.onnx")
        exported = OnnxPredictor(onnx_file)
        size = predictor.settings.image_size
        n = len(paths)

        def best(measure) -> float:
            return min(measure() for _ in range(args.rounds))

        plain = best(lambda: plain_loop(predictor.model, paths, size, args.batch_size))
        config = PredictConfig(model=str(folder), imageset=demo.imageset_studio, output_dir=root / "out",
                               datastore_name="", draw=0, device="cpu", batch_size=args.batch_size)  # fmt: skip
        phase = best(lambda: run_predict(config).seconds)
        command = [str(Path(sys.executable).with_name("trainkit")), "predict", "--model", str(folder), "--imageset",
                   str(demo.imageset_studio), "--datastore-name", "", "--output-dir", str(root / "cmd"), "--draw", "0",
                   "--device", "cpu", "--batch-size", str(args.batch_size)]  # fmt: skip

        def whole() -> float:
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            return time.perf_counter() - start

        command_seconds = best(whole)
        arrays = [to_array(p) for p in paths]

        def per_image(p) -> float:
            times = []
            for array in arrays:
                start = time.perf_counter()
                p.predict([array], 0.0)
                times.append(time.perf_counter() - start)
            return statistics.median(times) * 1000

        def batched(p) -> float:
            start = time.perf_counter()
            for i in range(0, n, args.batch_size):
                p.predict(arrays[i : i + args.batch_size], 0.0)
            return n / (time.perf_counter() - start)

        torch_one, onnx_one = best(lambda: per_image(predictor)), best(lambda: per_image(exported))
        torch_batch = max(batched(predictor) for _ in range(args.rounds))
        onnx_batch = max(batched(exported) for _ in range(args.rounds))

    machine = platform.processor() or platform.machine()
    print(f"predict benchmark: {args.trainer} at {size} px, {n} images (320x240), batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads, {machine}, best of {args.rounds}")  # fmt: skip
    print(f"{'row':<52} {'images/s':>9} {'vs plain':>9}")
    rows = [
        ("plain loop (PIL + transforms.v2 + model)", n / plain),
        ("trainkit predict: prediction phase (loader + model)", n / phase),
        ("trainkit predict: whole command (start-up, files)", n / command_seconds),
    ]
    for name, rate in rows:
        print(f"{name:<52} {rate:>9.1f} {rate / rows[0][1]:>8.2f}x")
    print(f"\n{'per image on the CPU':<32} {'torch':>10} {'onnxruntime':>12} {'ort vs torch':>13}")
    print(f"{'one image: median ms':<32} {torch_one:>10.1f} {onnx_one:>12.1f} {torch_one / onnx_one:>12.2f}x")
    print(f"{'batches: images/s':<32} {torch_batch:>10.1f} {onnx_batch:>12.1f} {onnx_batch / torch_batch:>12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
