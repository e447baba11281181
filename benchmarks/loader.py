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

    .venv/bin/python benchmarks/loader.py [--images 512] [--batch-size 32] [--epochs 2] [--rounds 3] [--smoke]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw
from smoke import parse_args

from trainkit.batch import LoaderConfig
from trainkit.data.dataset import DatasetOptions, DatasetPair, load_pair
from trainkit.loading.distributed import usable_cores
from trainkit.loading.loader import create_loader

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


def epoch_rate(make_batches: Callable[[], Iterable], epochs: int, count_of: Callable[[object], int]) -> float:
    """Images per second over `epochs` passes."""
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in make_batches():
            n += count_of(batch)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


@dataclass
class Row:
    """One pipeline under test: `passes()` yields one epoch of batches; `count_of` counts a batch's images."""

    kind: str
    name: str
    passes: Callable[[], Iterable]
    count_of: Callable[[object], int] = len
    rates: list[float] = field(default_factory=list)


def _pil_decode(path: str) -> int:
    with Image.open(path) as image:
        return image.convert("RGB").size[0]


def _simplejpeg_decode(path: str) -> int:
    import simplejpeg

    return simplejpeg.decode_jpeg(Path(path).read_bytes(), colorspace="RGB").shape[0]


def pool_passes(pool, decode: Callable[[str], int], paths: list[str]) -> Callable[[], Iterable]:
    """One epoch of decoding every path in the pool's processes (no batching, no resize)."""

    def one_epoch() -> Iterable[list[int]]:
        yield pool.map(decode, paths, chunksize=8)

    return one_epoch


def dali_decode_passes(records, batch_size: int, threads: int) -> Callable[[], Iterable]:
    """One epoch of DALI's CPU decoder alone, fed the files' bytes from memory."""
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
                yield p.run()[0]
        except StopIteration:
            return

    return one_epoch


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
            with Image.open(record.path) as image, warnings.catch_warnings():
                # The converted image is this sample's alone and never written: no copy needed.
                warnings.filterwarnings("ignore", "The given NumPy array is not writable")
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
    parser.add_argument("--epochs", type=int, default=2, help="passes timed per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all rows; each row keeps its best")
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser, argv, images=16, batch_size=8, epochs=1, rounds=1)
    cores = usable_cores()

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp) / "images"
        folder.mkdir()
        labels = make_images(folder, args.images, args.seed)
        records, _ = load_pair(DatasetPair(folder, labels), DatasetOptions())
        paths = [str(p) for p in records.paths]

        decoders = [("PIL", _pil_decode)]
        if importlib.util.find_spec("simplejpeg"):
            decoders.append(("simplejpeg", _simplejpeg_decode))
        pool = stack.enter_context(Pool(cores))
        rows = [
            Row("bound", f"{name} decode only, {cores} processes", pool_passes(pool, decode, paths))
            for name, decode in decoders
        ]
        rows.append(
            Row("bound", f"DALI decode only, {cores} threads", dali_decode_passes(records, args.batch_size, cores))
        )
        for decoder in ("pil", "torchvision.io"):
            loader = torchvision_loader(records, decoder, args.batch_size, cores)
            name = f"DataLoader({cores} workers) + {decoder} + v2.Resize"
            rows.append(Row("torchvision", name, lambda loader=loader: loader, lambda b: len(b[0])))
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            for train in (False, True):
                config = LoaderConfig(batch_size=args.batch_size, image_size=SIZE, train=train, num_threads=cores)
                loader = create_loader(records, config, device=device)
                mode = "train: crop + flip + resize" if train else "eval: decode + resize"
                rows.append(Row(f"trainkit ({device})", mode, lambda loader=loader: loader, lambda b: len(b.indices)))

        # This VM's speed drifts by 10-20% over a minute: interleaving rounds and keeping each
        # row's best compares every pipeline under the same conditions.
        for row in rows:
            epoch_rate(row.passes, 1, row.count_of)  # warm-up: workers started, files cached
        for _ in range(args.rounds):
            for row in rows:
                row.rates.append(epoch_rate(row.passes, args.epochs, row.count_of))

    best = {id(row): max(row.rates) for row in rows}
    bound = max(best[id(row)] for row in rows if row.kind == "bound")
    best_tv = max(best[id(row)] for row in rows if row.kind == "torchvision")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    setup = f"batch {args.batch_size}, best of {args.rounds} rounds of {args.epochs} epochs after a warm-up"
    print(f"\n{args.images} JPEGs 640x480 -> {SIZE}x{SIZE} uint8, {setup}")
    print(f"{platform.machine()}, {cores} cores, {gpu}, torch {torch.__version__}, Python {sys.version.split()[0]}")
    print(f"{'kind':<16} {'pipeline':<52} {'img/s':>7} {'rounds':>17} {'vs best tv':>11} {'vs bound':>9}")
    for row in rows:
        rate = best[id(row)]
        rounds = "/".join(f"{r:.0f}" for r in row.rates)
        print(f"{row.kind:<16} {row.name:<52} {rate:>7.0f} {rounds:>17} {rate / best_tv:>10.2f}x {rate / bound:>9.0%}")
    for row in rows:
        if row.kind.startswith("trainkit"):
            rate = best[id(row)]
            print(f"\n{row.kind} {row.name.split(':')[0]} vs best torchvision: {rate / best_tv:.2f}x (target >= 1.00)")
            for other in rows:
                if other.kind == "bound":
                    print(f"  vs {other.name}: {rate / best[id(other)]:.0%} (target >= 50%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
