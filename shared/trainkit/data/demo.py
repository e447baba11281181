"""A small synthetic dataset in exactly the labelling API's format, for demos and tests.

Images show circles, squares and triangles on a noisy background; each shape's box is its exact
extent in pixels. The label set is what the API writes: pandas `to_csv` (index included) of a
DataFrame whose `label` cells are lists of dicts and whose `label_confidence` cells are lists of
floats. Both image-set layouts are written: with the datastore folder and the ML-studio one.

Two kinds: `shapes` (320x240 images, a few shapes a sixth to a third of the image wide) and
`scenes` (1600x1200 images crowded with 12-32 px shapes and a few large ones: small objects in
large images, the case tiling is for).
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
KINDS = ("shapes", "scenes")
SCENE_SIZE = (1600, 1200)
SMALL_SIDE = (12, 32)  # scenes: most objects' sides, in pixels
LARGE_SIDE = (160, 400)  # scenes: the few large objects'
SMALL_PER_SCENE = (12, 30)
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
    kind: str = "shapes",
    label_noise: float = 0.0,
) -> DemoDataset:
    """Write the demo dataset of `kind` (see the module doc) into `root` (which must be new or empty
    unless `force`); scenes are SCENE_SIZE whatever `size` says. `label_noise` corrupts that share of
    the objects' labels (see `corrupt`): labels.csv holds the noisy set, labels_clean.csv the true one
    and label_noise.csv what was done; the images are the same as without noise."""
    root = Path(root)
    if images < 1:
        raise UserError(f"--images must be at least 1, got {images}")
    if not 0 <= label_noise < 1:
        raise UserError(f"--label-noise {label_noise}: a share of the objects, from 0 up to (not including) 1")
    if kind not in KINDS:
        raise UserError(f"--kind {kind!r}: one of {', '.join(KINDS)}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())) and not force:
        raise UserError(f"{root} exists and is not empty; pass --force to replace it, or choose a new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        _write(staging, images, seed, size if kind == "shapes" else SCENE_SIZE, datastore_name, kind, label_noise)
        staging.chmod(0o755)  # mkdtemp made it private; the data is meant to be mounted and shared
        if root.exists():
            shutil.rmtree(root) if root.is_dir() else root.unlink()
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return DemoDataset(root, root / "labels.csv", root / "imageset", root / "imageset_studio", datastore_name)


def _write(
    root: Path, images: int, seed: int, size: tuple[int, int], datastore_name: str, kind: str, label_noise: float
) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(images):
        suffix = "png" if i % 6 == 5 else "jpg"
        url = f"{IMAGE_FOLDER}/img_{i:04d}.{suffix}"
        image, objects = _draw_image(rng, size) if kind == "shapes" else _draw_scene(rng, size)
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
        rows.append({"image_url": url, "label": objects, "label_confidence": confidences, "labeler": f"demo-{i % 3}",
                     "size": image.size})  # fmt: skip
    sizes = [row.pop("size") for row in rows]
    if label_noise:
        pd.DataFrame(rows).to_csv(root / "labels_clean.csv")
        # Its own random stream: the images, and the clean labels, are those of the same seed without noise.
        done = corrupt(rows, sizes, label_noise, np.random.default_rng([seed, 1]))
        pd.DataFrame(done, columns=NOISE_COLUMNS).to_csv(root / "label_noise.csv", index=False)
    pd.DataFrame(rows).to_csv(root / "labels.csv")
    (root / "README.txt").write_text(
        f"trainkit demo dataset (synthetic {kind}).\n"
        f"With the datastore folder: DATASTORE_NAME={datastore_name} trainkit validate "
        "--imageset imageset --labelset labels.csv\n"
        "ML-studio layout: trainkit validate --imageset imageset_studio --labelset labels.csv --datastore-name ''\n",
        encoding="utf-8",
    )


NOISE_KINDS = ("removed", "swapped", "shifted", "spurious")
NOISE_COLUMNS = ["image_url", "kind", "type", "true_type", "bottomX", "topX", "bottomY", "topY", "true_box"]
SHIFT = 0.4  # a shifted box moves by this share of its width and height


def corrupt(rows: list[dict], sizes: list[tuple[int, int]], share: float, rng: np.random.Generator) -> list[dict]:
    """Corrupt `share` of the objects of `rows` in place, a quarter each way: removed, class swapped,
    shifted by SHIFT of its size, and a spurious box added (as many as a quarter of the share); returns
    one record per change: the label as it now is (removed: as it was), and the true class and box."""
    objects = [(r, k) for r, row in enumerate(rows) for k in range(len(row["label"]))]
    chosen = rng.permutation(len(objects))[: round(share * len(objects))]
    done: list[dict] = []
    removals: list[tuple[int, int]] = []
    for n, pick in enumerate(chosen):
        r, k = objects[pick]
        kind = NOISE_KINDS[n % 4]
        label, url = rows[r]["label"][k], rows[r]["image_url"]
        truth = {"true_type": label["type"], "true_box": [label[c] for c in ("bottomX", "topX", "bottomY", "topY")]}
        if kind == "removed":
            removals.append((r, k))
            done.append({"image_url": url, "kind": kind, **label, **truth})
        elif kind == "swapped":
            label["type"] = CLASSES[(CLASSES.index(label["type"]) + int(rng.integers(1, len(CLASSES)))) % len(CLASSES)]
            done.append({"image_url": url, "kind": kind, **label, **truth})
        elif kind == "shifted":
            width, height = sizes[r]
            w, h = label["topX"] - label["bottomX"], label["topY"] - label["bottomY"]
            dx, dy = (round(SHIFT * side) * int(rng.choice([-1, 1])) for side in (w, h))
            dx = int(np.clip(dx, -label["bottomX"], width - label["topX"]))  # the box stays inside the image
            dy = int(np.clip(dy, -label["bottomY"], height - label["topY"]))
            label.update(bottomX=label["bottomX"] + dx, topX=label["topX"] + dx, bottomY=label["bottomY"] + dy,
                         topY=label["topY"] + dy)  # fmt: skip
            done.append({"image_url": url, "kind": kind, **label, **truth})
        else:  # a box where there is nothing, in a random image, sized like the demo's shapes
            s = int(rng.integers(len(rows)))
            width, height = sizes[s]
            w, h = int(rng.integers(width // 8, width // 3)), int(rng.integers(height // 8, height // 3))
            x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            added = {"type": CLASSES[int(rng.integers(len(CLASSES)))], "bottomX": x0, "topX": x0 + w,
                     "bottomY": y0, "topY": y0 + h}  # fmt: skip
            rows[s]["label"].append(added)
            rows[s]["label_confidence"].append(0.9)
            done.append({"image_url": rows[s]["image_url"], "kind": kind, **added, "true_type": "", "true_box": []})
    for r, k in sorted(removals, reverse=True):  # from the end, so earlier indices stay put
        del rows[r]["label"][k]
        del rows[r]["label_confidence"][k]
    return done


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
        # The draws' order is the demo set's identity (its published figures): name, size, place, colour.
        name = CLASSES[int(rng.integers(len(CLASSES)))]
        w = int(rng.integers(width // 8, width // 3))
        h = int(rng.integers(height // 8, height // 3))
        x0 = int(rng.integers(0, width - w))
        y0 = int(rng.integers(0, height - h))
        objects.append(_draw_shape(draw, name, _colour(rng), x0, y0, w, h))
    return image, objects


def _draw_scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[Image.Image, list[dict]]:
    """A large image crowded with small shapes and a few large ones, none overlapping."""
    width, height = size
    # Blotchy, low-frequency background with a little fine noise: cluttered, yet small as a JPEG.
    coarse = np.clip(rng.integers(60, 190, 3) + rng.integers(-30, 30, (height // 80 + 1, width // 80 + 1, 3)), 0, 255)
    blotches = Image.fromarray(coarse.astype(np.uint8), "RGB").resize((width, height), Image.BILINEAR)
    pixels = np.clip(np.asarray(blotches, np.int16) + rng.integers(-8, 8, (height, width, 3)), 0, 255)
    pixels = pixels.astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    sides = [int(rng.integers(*LARGE_SIDE)) for _ in range(int(rng.integers(0, 3)))]
    sides += [int(rng.integers(*SMALL_SIDE)) for _ in range(int(rng.integers(*SMALL_PER_SCENE)))]
    taken: list[tuple[int, int, int, int]] = []
    objects = []
    for side in sides:
        w, h = side, max(SMALL_SIDE[0], int(side * rng.uniform(0.75, 1.33)))
        for _ in range(20):  # a free place, a few pixels from every other object
            x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            if all(x0 > b[2] + 4 or x0 + w + 4 < b[0] or y0 > b[3] + 4 or y0 + h + 4 < b[1] for b in taken):
                taken.append((x0, y0, x0 + w, y0 + h))
                name = CLASSES[int(rng.integers(len(CLASSES)))]
                objects.append(_draw_shape(draw, name, _colour(rng), x0, y0, w, h))
                break
    return image, objects


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _draw_shape(
    draw: ImageDraw.ImageDraw, name: str, colour: tuple[int, int, int], x0: int, y0: int, w: int, h: int
) -> dict:
    """Shape `name` filling the box (x0, y0, w, h); its label in the API's form."""
    x1, y1 = x0 + w - 1, y0 + h - 1
    if name == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    elif name == "square":
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=colour)
    # The API's keys: bottom is the start and top the end of each range, in pixels.
    return {"type": name, "bottomX": x0, "topX": x0 + w, "bottomY": y0, "topY": y0 + h}
