"""Benchmark: trainkit's DALI loader against torchvision DataLoaders and the decode-only bound, one run.

Same JPEGs (default 512 at 640x480, with boxes), same cores, same output form: uint8 (N, 3, 512, 512)
batches plus per-image boxes. Rows:
  decode-only bound    PIL (and simplejpeg when installed) decoding alone in one process per core,
                       and DALI's decoder alone; no resize, no batching
  torchvision          DataLoader(num_workers=cores, persistent) + transforms.v2 Resize on
                       tv_tensors (boxes move with it), decoding with PIL or torchvision.io
  trainkit (cpu)       create_loader(..., device="cpu"): eval mode (decode + resize) and train mode
                       (crop around boxes + flip + resize)
  trainkit (cuda)      the same on the GPU, when torch sees one

    .venv/bin/python benchmarks/loader.py [--images 512] [--batch-size 32] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from trainkit.dataset import DatasetOptions, DatasetPair, load_pair
from trainkit.loader import LoaderConfig, create_loader

SIZE = 512


def make_images(folder: Path, count: int, seed: int) -> Path:
    """Photo-like JPEGs (smooth colour fields, shapes, noise) with boxes, and their label set."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        base = Image.fromarray(rng.integers(0, 255, (15, 20, 3), dtype=np.uint8)).resize((640, 480), Image.BICUBIC)
        pixels = np.asarray(base, np.int16) + rng.integers(-12, 12, (480, 640, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        objects = []
        for _ in range(int(rng.integers(1, 5))):
            x0, y0 = int(rng.integers(0, 560)), int(rng.integers(0, 400))
            x1, y1 = x0 + int(rng.integers(20, 80)), y0 + int(rng.integers(20, 80))
            draw.rectangle((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
            objects.append({"type": "box", "bottomX": x0, "topX": x1, "bottomY": y0, "topY": y1})
        image.save(folder / f"{i:05d}.jpg", quality=90)
        rows.append({"image_url": f"{i:05d}.jpg", "label": objects})
    labels = folder.parent / "labels.csv"
    pd.DataFrame(rows).to_csv(labels)
    return labels


def timed(make_batches: Callable[[], Iterable], epochs: int, count_of: Callable[[object], int]) -> tuple[float, int]:
    """Images per second over `epochs` passes, after one warm-up pass."""
    for _ in make_batches():
        pass
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in make_batches():
            n += count_of(batch)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start), n


def _pil_decode(path: str) -> int:
    with Image.open(path) as image:
        return image.convert("RGB").size[0]


def _simplejpeg_decode(path: str) -> int:
    import simplejpeg

    return simplejpeg.decode_jpeg(Path(path).read_bytes(), colorspace="RGB").shape[0]


def decode_only(paths: list[str], decode: Callable[[str], int], workers: int, epochs: int) -> float:
    with Pool(workers) as pool:
        pool.map(decode, paths[: workers * 4])
        start = time.perf_counter()
        for _ in range(epochs):
            pool.map(decode, paths, chunksize=8)
        return len(paths) * epochs / (time.perf_counter() - start)


def dali_decode_only(records, batch_size: int, threads: int, epochs: int) -> float:
    from nvidia.dali import fn, pipeline_def, types

    files = [np.fromfile(p, np.uint8) for p in records.paths]
    state = {"i": 0}

    def source():
        if state["i"] >= len(files):
            raise StopIteration
        chunk = files[state["i"] : state["i"] + batch_size]
        state["i"] += len(chunk)
        return chunk

    @pipeline_def
    def pipe():
        return fn.decoders.image(fn.external_source(source=source, batch=True, dtype=types.UINT8), device="cpu")

    p = pipe(batch_size=batch_size, num_threads=threads, device_id=None)
    p.build()

    def one_epoch():
        state["i"] = 0
        p.reset()
        try:
            while True:
                yield p.run()
        except StopIteration:
            return

    rate, _ = timed(one_epoch, epochs, lambda out: len(out[0]))
    return rate


class TorchvisionSet(torch.utils.data.Dataset):
    """The usual torchvision detection dataset: decode, wrap as tv_tensors, v2.Resize, uint8 out."""

    def __init__(self, records, decoder: str) -> None:
        from torchvision.transforms import v2

        self.records, self.decoder = records, decoder
        self.transform = v2.Resize((SIZE, SIZE), antialias=True)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        from torchvision import io as tvio
        from torchvision import tv_tensors

        record = self.records[i]
        if self.decoder == "pil":
            with Image.open(record.path) as image:
                pixels = torch.from_numpy(np.asarray(image.convert("RGB"))).permute(2, 0, 1)
        else:
            pixels = tvio.decode_jpeg(tvio.read_file(record.path), mode=tvio.ImageReadMode.RGB)
        image = tv_tensors.Image(pixels)
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(record.boxes), format="XYXY", canvas_size=image.shape[-2:])
        image, boxes = self.transform(image, boxes)
        return image, {"boxes": boxes, "labels": torch.from_numpy(record.class_ids)}


def _collate(items):
    images, targets = zip(*items, strict=True)
    return torch.stack(images), list(targets)


def torchvision_loader(records, decoder: str, batch_size: int, workers: int):
    return torch.utils.data.DataLoader(
        TorchvisionSet(records, decoder),
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=True,
        collate_fn=_collate,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        labels = make_images(folder, args.images, args.seed)
        records, _ = load_pair(DatasetPair(folder, labels), DatasetOptions())
        paths = [str(p) for p in records.paths]
        rows: list[tuple[str, str, float]] = []

        rows.append(
            ("bound", f"PIL decode only, {cores} processes", decode_only(paths, _pil_decode, cores, args.epochs))
        )
        try:
            import simplejpeg  # noqa: F401

            rows.append(
                (
                    "bound",
                    f"simplejpeg decode only, {cores} processes",
                    decode_only(paths, _simplejpeg_decode, cores, args.epochs),
                )
            )
        except ImportError:
            pass
        rows.append(
            (
                "bound",
                f"DALI decode only, {cores} threads",
                dali_decode_only(records, args.batch_size, cores, args.epochs),
            )
        )

        for decoder in ("pil", "torchvision.io"):
            loader = torchvision_loader(records, decoder, args.batch_size, cores)
            rate, _ = timed(lambda loader=loader: loader, args.epochs, lambda b: len(b[0]))
            rows.append(("torchvision", f"DataLoader({cores} workers) + {decoder} + v2.Resize", rate))
            del loader

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            for train in (False, True):
                config = LoaderConfig(batch_size=args.batch_size, image_size=SIZE, train=train, num_threads=cores)
                loader = create_loader(records, config, device=device)
                rate, _ = timed(lambda loader=loader: loader, args.epochs, lambda b: len(b.indices))
                mode = "train: crop + flip + resize" if train else "eval: decode + resize"
                rows.append((f"trainkit ({device})", mode, rate))

    bound = max(rate for kind, _, rate in rows if kind == "bound")
    best_tv = max(rate for kind, _, rate in rows if kind == "torchvision")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    setup = f"batch {args.batch_size}, {args.epochs} epochs after a warm-up"
    print(f"\n{args.images} JPEGs 640x480 -> {SIZE}x{SIZE} uint8, {setup}")
    print(f"{platform.machine()}, {cores} cores, {gpu}, torch {torch.__version__}, Python {sys.version.split()[0]}")
    print(f"{'kind':<16} {'pipeline':<48} {'img/s':>8} {'vs best torchvision':>20} {'vs decode bound':>16}")
    for kind, name, rate in rows:
        print(f"{kind:<16} {name:<48} {rate:>8.0f} {rate / best_tv:>19.2f}x {rate / bound:>15.0%}")
    cpu_eval = next(rate for kind, name, rate in rows if kind == "trainkit (cpu)" and name.startswith("eval"))
    print(f"\ntrainkit cpu (eval) vs best torchvision: {cpu_eval / best_tv:.2f}x (target >= 1.00)")
    for kind, name, rate in rows:
        if kind == "bound":
            print(f"trainkit cpu (eval) vs {name}: {cpu_eval / rate:.0%} (target >= 50%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
