"""Benchmark: the dataset checks and report on a large label set, against validate's row checks alone.

Data: `trainkit demo-data --images N` (320x240 JPEG shapes), plus 1% of its images copied (exact
copies, re-encoded and resized ones; so the duplicate checks have work to do). Rows, each one
`trainkit validate` process over the same files (20% validation split), timed from the outside:
  validate                   the rows, their images' sizes, the box and class checks (the baseline)
  validate --duplicates      + every image read: sha256, pHash, near pairs confirmed
  validate --report DIR      + the charts, sample grid and the findings drawn into report.html
Printed: seconds, images per second, against the baseline, and what the checks found: the planted
copies, and pairs among the demo's own images (its plain, object-less pictures of nearly one
colour look alike). The issue's target: the report of 10,000 images in 60 s on 2 cores.

    .venv/bin/python benchmarks/dataset_report.py [--images 10000] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smoke import parse_args

TRAINKIT = Path(sys.executable).with_name("trainkit")


def plant_copies(root: Path, labels: Path, share: float) -> int:
    """Copy `share` of the images (a third exact, a third re-encoded, a third at half size) with their rows."""
    import pandas as pd
    from PIL import Image

    table = pd.read_csv(labels)
    pick = table.iloc[:: max(1, round(1 / share))]
    rows = []
    for k, row in enumerate(pick.itertuples(index=False)):
        source = root / row.image_url
        target = source.with_name(f"copy_{k}_{source.name}")
        if k % 3 == 0:
            shutil.copy(source, target)
        else:
            with Image.open(source) as image:
                if k % 3 == 2:
                    image = image.resize((image.width // 2, image.height // 2))
                image.save(target, quality=70)
        rows.append({**row._asdict(), "image_url": str(target.relative_to(root))})
    pd.concat([table, pd.DataFrame(rows)]).to_csv(labels, index=False)
    return len(rows)


def timed(*args: str) -> tuple[float, dict]:
    """Seconds of one `trainkit validate ARGS --json`, and its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "validate.json"
        start = time.perf_counter()
        subprocess.run([str(TRAINKIT), "validate", *args, "--json", str(out)], check=True, capture_output=True)
        return time.perf_counter() - start, json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    args = parse_args(parser, argv, images=60)
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-report-") as tmp:
        data = Path(tmp) / "data"
        subprocess.run([str(TRAINKIT), "demo-data", str(data), "--images", str(args.images), "--seed", "4"],
                       check=True, capture_output=True)  # fmt: skip
        planted = plant_copies(data / "imageset_studio", data / "labels.csv", 0.01)
        base = ["--imageset", str(data / "imageset_studio"), "--datastore-name", "", "--labelset",
                str(data / "labels.csv"), "--val-fraction", "0.2"]  # fmt: skip
        rows = [("validate", []), ("validate --duplicates", ["--duplicates"]),
                ("validate --report DIR", ["--report", str(Path(tmp) / "report")])]  # fmt: skip
        results = [(name, *timed(*base, *extra)) for name, extra in rows]
    images = args.images + planted
    print(f"\n{images} images ({args.images} demo-data 320x240 JPEGs + {planted} planted copies), 20% validation; "
          f"CPU ({os.cpu_count()} cores)")  # fmt: skip
    print(f"{'row':<24} {'seconds':>8} {'images/s':>9} {'x baseline':>11}  found")
    for name, seconds, summary in results:
        checks = summary.get("checks") or {}
        pairs = [f for f in checks.get("findings", []) if f["check"] in ("duplicate", "near_duplicate", "leakage")]
        mine = sum("copy_" in f["image"] + f.get("other", "") for f in pairs)
        found = (f"{mine} of {planted} planted copies; {len(pairs) - mine} other pairs"
                 if "duplicate" in checks.get("counts", {}) else "(images not read)")  # fmt: skip
        print(f"{name:<24} {seconds:>8.1f} {images / seconds:>9.0f} {seconds / results[0][1]:>10.1f}x  {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
