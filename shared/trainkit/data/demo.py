"""A small synthetic dataset in exactly the labelling API's format, for demos and tests.

Images show circles, squares and triangles on a noisy background; each shape's box is its exact
extent in pixels. The label set is what the API writes: pandas `to_csv` (index included) of a
DataFrame whose `label` cells are lists of dicts and whose `label_confidence` cells are lists of
floats. Both image-set layouts are written: with the datastore folder and the ML-studio one.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from trainkit.errors import UserError

CLASSES = ("circle", "square", "triangle")
DEFAULT_DATASTORE = "demo_datastore"
IMAGE_FOLDER = "shapes"


@dataclass(frozen=True)
class DemoDataset:
    """Where the parts of a demo dataset were written."""

    root: Path
    labels_csv: Path
    imageset_datastore: Path  # images under <this>/<datastore_name>/<image_url>
    imageset_studio: Path  # images under <this>/<image_url>
    datastore_name: str


def write_demo_dataset(
    root: Path,
    images: int = 24,
    seed: int = 0,
    size: tuple[int, int] = (320, 240),
    datastore_name: str = DEFAULT_DATASTORE,
    force: bool = False,
) -> DemoDataset:
    """Write the demo dataset into `root` (which must be new or empty unless `force`)."""
    root = Path(root)
    if images < 1:
        raise UserError(f"--images must be at least 1, got {images}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())) and not force:
        raise UserError(f"{root} exists and is not empty; pass --force to replace it, or choose a new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        _write(staging, images, seed, size, datastore_name)
        staging.chmod(0o755)  # mkdtemp made it private; the data is meant to be mounted and shared
        if root.exists():
            shutil.rmtree(root) if root.is_dir() else root.unlink()
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return DemoDataset(root, root / "labels.csv", root / "imageset", root / "imageset_studio", datastore_name)


def _write(root: Path, images: int, seed: int, size: tuple[int, int], datastore_name: str) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(images):
        suffix = "png" if i % 6 == 5 else "jpg"
        url = f"{IMAGE_FOLDER}/img_{i:04d}.{suffix}"
        image, objects = _draw_image(rng, size)
        for folder in (root / "imageset" / datastore_name, root / "imageset_studio"):
            path = folder / url
            path.parent.mkdir(parents=True, exist_ok=True)
            if suffix == "jpg":
                image.save(path, quality=90)
            else:
                image.save(path)
        confidences = [round(float(c), 3) for c in rng.uniform(0.55, 1.0, len(objects))]
        if objects and i % 5 == 4:
            confidences[0] = round(float(rng.uniform(0.1, 0.3)), 3)  # a doubtful label for --min-confidence
        rows.append({"image_url": url, "label": objects, "label_confidence": confidences, "labeler": f"demo-{i % 3}"})
    pd.DataFrame(rows).to_csv(root / "labels.csv")
    (root / "README.txt").write_text(
        "trainkit demo dataset (synthetic shapes).\n"
        f"With the datastore folder: DATASTORE_NAME={datastore_name} trainkit validate "
        "--imageset imageset --labelset labels.csv\n"
        "ML-studio layout: trainkit validate --imageset imageset_studio --labelset labels.csv --datastore-name ''\n",
        encoding="utf-8",
    )


def _draw_image(rng: np.random.Generator, size: tuple[int, int]) -> tuple[Image.Image, list[dict]]:
    width, height = size
    base = rng.integers(40, 200, 3)
    noise = rng.integers(-25, 25, (height, width, 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    objects = []
    count = int(rng.integers(1, 5)) if rng.random() > 0.1 else 0  # some images show nothing
    for _ in range(count):
        name = CLASSES[int(rng.integers(len(CLASSES)))]
        w = int(rng.integers(width // 8, width // 3))
        h = int(rng.integers(height // 8, height // 3))
        x0 = int(rng.integers(0, width - w))
        y0 = int(rng.integers(0, height - h))
        x1, y1 = x0 + w - 1, y0 + h - 1
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if name == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif name == "square":
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=colour)
        # The API's keys: bottom is the start and top the end of each range, in pixels.
        objects.append({"type": name, "bottomX": x0, "topX": x0 + w, "bottomY": y0, "topY": y0 + h})
    return image, objects
