"""Benchmark: peak memory and time of the training loader on very large JPEGs, reduced decode vs full decode.

Each row runs in its own process (peak RSS is per process) over the same files: --images JPEGs of
--size (default 12000x9000, a flatbed scan), one red object each, read by the DALI loader on the
CPU for --epochs training epochs at --image-size:
  baseline   the size limit lifted: DALI decodes every window at full resolution (what trainkit did)
  trainkit   above 40 MP Pillow decodes at reduced size with JPEG DCT scaling (trainkit.loading.large_images)
Columns: peak resident memory of the process (MiB), the same less the process's memory before the
loader started (the loader's own), and seconds per image.

    .venv/bin/python benchmarks/large_images.py [--images 8] [--size 12000x9000] [--batch-size 4] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from smoke import parse_args

CHILD = """
import json, resource, sys, time
from pathlib import Path
import trainkit.loading.large_images as large
from trainkit.batch import LoaderConfig
from trainkit.data.dataset import DatasetOptions, DatasetPair, load_pair
from trainkit.loading.loader import create_loader

folder, mode, batch, size, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if mode == "baseline":
    large.LARGE_IMAGE_PIXELS = 10**12
pair = DatasetPair(Path(folder) / "imgs", Path(folder) / "labels.csv")
records, _ = load_pair(pair, DatasetOptions(datastore_name=""))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loader = create_loader(records, LoaderConfig(batch_size=batch, image_size=size, train=True, seed=0))
started, n = time.perf_counter(), 0
for _ in range(epochs):
    for b in loader:
        n += len(b.indices)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": peak / 1024, "before_mib": before / 1024, "s_per_image": seconds / n}))
"""


def write_set(folder: Path, images: int, width: int, height: int) -> None:
    import numpy as np
    import pandas as pd
    from PIL import Image

    (folder / "imgs").mkdir(parents=True)
    rows = []
    for i in range(images):
        x0, y0 = width // 4 + i * width // (4 * images), height // 3
        x1, y1 = x0 + width // 3, y0 + height // 3
        array = np.empty((height, width, 3), np.uint8)
        array[:] = (40, 160, 40)
        array[y0:y1, x0:x1] = (250, 30, 30)
        Image.fromarray(array).save(folder / "imgs" / f"{i}.jpg", quality=90)
        del array
        box = {"type": "red", "bottomX": x0, "topX": x1, "bottomY": y0, "topY": y1}
        rows.append({"image_url": f"{i}.jpg", "label": [box]})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)


def measure(folder: Path, mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-c", CHILD, str(folder), mode, str(args.batch_size), str(args.image_size),
               str(args.epochs)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", default="12000x9000", help="WIDTHxHEIGHT of each JPEG")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    args = parse_args(parser, argv, images=2, size="7400x5600", batch_size=2, epochs=1)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_set(folder, args.images, width, height)
        rows = {mode: measure(folder, mode, args) for mode in ("baseline", "trainkit")}
    print(f"# {args.images} JPEGs of {width}x{height}, batch {args.batch_size}, image size {args.image_size}, "
          f"{args.epochs} epochs, DALI on the CPU; {platform.machine()}, {platform.python_version()}")  # fmt: skip
    print(f"{'loader':<36}{'peak MiB':>10}{'loader MiB':>12}{'s/image':>10}{'peak vs baseline':>18}")
    base = rows["baseline"]
    labels = {"baseline": "baseline: DALI decodes full size", "trainkit": "trainkit: reduced decode >40 MP"}
    for mode, label in labels.items():
        row = rows[mode]
        own = row["peak_mib"] - row["before_mib"]
        ratio = row["peak_mib"] / base["peak_mib"]
        print(f"{label:<36}{row['peak_mib']:>10.0f}{own:>12.0f}{row['s_per_image']:>10.3f}{ratio:>17.2f}x")


if __name__ == "__main__":
    main()
