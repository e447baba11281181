"""The DALI loader on the CPU: geometry, order, sharding, determinism, formats and bad files.

The GPU variant is the same pipeline with decode_device="mixed"; tests marked `gpu` rerun the
geometry checks there when a GPU is present.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import obj, write_labels
from PIL import Image

from trainkit.batch import ClassificationBatch, DetectionBatch, LoaderConfig, to_float
from trainkit.data.dataset import DatasetOptions, DatasetPair, load_pair
from trainkit.errors import DatasetError, UserError
from trainkit.geometry.windows import CROP_MIN_IOUS, sample_crop_window, sample_rng
from trainkit.inference.devices import resolve_device
from trainkit.loading.distributed import Shard
from trainkit.loading.loader import create_loader
from trainkit.loading.resize import resize_uint8, resize_via_float

RED = (250, 30, 30)
BLUE = (30, 30, 250)
BACKGROUND = (40, 160, 40)


def scene(path: Path, size=(160, 120), rects=(((20, 30, 70, 90), RED),), fmt=None, mode="RGB", exif=None) -> Path:
    """An image with solid rectangles (xyxy, end exclusive) on a plain background."""
    array = np.zeros((size[1], size[0], 3), np.uint8)
    array[:] = BACKGROUND
    for (x0, y0, x1, y1), colour in rects:
        array[y0:y1, x0:x1] = colour
    image = Image.fromarray(array).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"quality": 95} if path.suffix == ".jpg" else {}
    if exif is not None:
        kwargs["exif"] = exif
    image.save(path, format=fmt, **kwargs)
    return path


def records_for(tmp_path: Path, rows: list[dict]):
    labels = write_labels(tmp_path / "labels.csv", rows)
    records, report = load_pair(DatasetPair(tmp_path / "imgs", labels), DatasetOptions())
    assert not report.problems, report.problem_examples
    return records


def rect_set(tmp_path: Path, n: int = 6, suffix: str = "png"):
    rows = []
    for i in range(n):
        x0 = 10 + 5 * i
        scene(tmp_path / "imgs" / f"{i}.{suffix}", rects=(((x0, 30, x0 + 50, 90), RED),))
        rows.append({"image_url": f"{i}.{suffix}", "label": [obj("red", x0, x0 + 50, 30, 90)]})
    return records_for(tmp_path, rows)


def is_red(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, H, W) bool."""
    r, g, b = images.int().unbind(1)
    return (r > 180) & (g < 100) & (b < 100)


def assert_boxes_cover_red(batch: DetectionBatch, margin: int = 2) -> None:
    red = is_red(batch.images.cpu())
    for i, target in enumerate(batch.targets):
        mask = torch.zeros_like(red[i])
        inner = torch.zeros_like(red[i])
        for x0, y0, x1, y1 in target["boxes"].cpu().tolist():
            mask[max(0, int(y0) - margin) : int(y1) + margin + 1, max(0, int(x0) - margin) : int(x1) + margin + 1] = (
                True
            )
            inner[int(y0) + margin : int(y1) - margin, int(x0) + margin : int(x1) - margin] = True
        if (~mask).any():  # a crop inside the object leaves nothing outside its box
            assert red[i][~mask].float().mean() < 0.005, "red pixels outside every box"
        if inner.any():
            assert red[i][inner].float().mean() > 0.95, "a box over pixels that are not the object"


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_boxes_move_with_pixels_through_crop_flip_resize(tmp_path: Path, suffix: str) -> None:
    records = rect_set(tmp_path, suffix=suffix)
    loader = create_loader(records, LoaderConfig(batch_size=3, image_size=96, train=True, seed=5))
    centres, widths = [], []
    for _ in range(6):
        for batch in loader:
            assert batch.images.shape[1:] == (3, 96, 96) and batch.images.dtype == torch.uint8
            assert_boxes_cover_red(batch)
            for target in batch.targets:
                boxes = target["boxes"]
                assert target["labels"].tolist() == [0] * len(boxes)
                centres += ((boxes[:, 0] + boxes[:, 2]) / 2).tolist()
                widths += (boxes[:, 2] - boxes[:, 0]).tolist()
    assert min(centres) < 40 and max(centres) > 56, "flips should put the object on both sides"
    assert max(widths) > 96 * 50 / 160 + 2, "some crops should zoom in"


def test_crop_windows_follow_the_ssd_policy() -> None:
    """Each crop lies inside the image, keeps some box's centre and overlaps a box by the smallest IoU or more."""
    rng = np.random.default_rng(0)
    crops = 0
    for seed in range(300):
        # Large boxes: a crop (at least 0.3 of each side) can overlap a small one by only a little IoU.
        x0, y0 = rng.uniform(0, 340, 3), rng.uniform(0, 180, 3)
        boxes = np.stack([x0, y0, x0 + rng.uniform(60, 300, 3), y0 + rng.uniform(60, 300, 3)], axis=1)
        window = sample_crop_window(sample_rng(seed, 0, 0), boxes, 640, 480)
        assert window.x0 >= 0 and window.y0 >= 0 and window.width >= 1 and window.height >= 1
        assert window.x0 + window.width <= 640 and window.y0 + window.height <= 480
        if (window.width, window.height) == (640, 480):
            continue
        crops += 1
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        wx1, wy1 = window.x0 + window.width, window.y0 + window.height
        inside = (cx >= window.x0) & (cx < wx1) & (cy >= window.y0) & (cy < wy1)
        assert inside.any()
        iw = np.clip(np.minimum(boxes[:, 2], wx1) - np.maximum(boxes[:, 0], window.x0), 0, None)
        ih = np.clip(np.minimum(boxes[:, 3], wy1) - np.maximum(boxes[:, 1], window.y0), 0, None)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert (iw * ih / (areas + window.width * window.height - iw * ih)).max() >= min(CROP_MIN_IOUS)
    assert crops > 100, "most samples should be cropped"
    empty = sample_crop_window(sample_rng(1, 0, 0), np.zeros((0, 4)), 640, 480)
    assert empty.x0 + empty.width <= 640 and empty.y0 + empty.height <= 480


@pytest.mark.parametrize(
    ("source", "target"), [((480, 640), (512, 512)), ((37, 101), (96, 96)), ((300, 200), (64, 80))]
)
def test_gpu_resize_matches_the_cpu_kernel(source: tuple[int, int], target: tuple[int, int]) -> None:
    """The GPU's float resize, run here on the CPU, gives the CPU uint8 kernel's pixels to within rounding."""
    # Noise: a resize with another filter, support or alignment lands visibly elsewhere on it.
    hwc = np.random.default_rng(3).integers(0, 256, (*source, 3), dtype=np.uint8)
    chw = torch.from_numpy(hwc).permute(2, 0, 1).unsqueeze(0)
    exact = torch.empty((1, 3, *target), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    via_float = torch.empty_like(exact)
    resize_uint8(chw, exact)
    resize_via_float(chw, via_float)
    difference = (exact.int() - via_float.int()).abs()
    # The uint8 kernel's fixed-point weights round a minority of pixels the other way (11-17% here
    # when shrinking); a shifted or differently filtered image would be off by far more at the edge.
    assert difference.max() <= 1 and difference.float().mean() < 0.25


def test_cpu_resize_leaves_torch_thread_count_as_it_was(tmp_path: Path) -> None:
    records = rect_set(tmp_path, n=4)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for batch in create_loader(records, LoaderConfig(batch_size=2, image_size=64, train=True)):
            assert torch.get_num_threads() == 2 and len(batch.indices) == 2
    finally:
        torch.set_num_threads(before)


def test_eval_mode_is_plain_resize(tmp_path: Path) -> None:
    records = rect_set(tmp_path, n=2)
    batch = next(iter(create_loader(records, LoaderConfig(batch_size=2, image_size=80, train=False))))
    assert batch.targets[0]["boxes"].tolist() == [[5.0, 20.0, 30.0, 60.0]]  # (10, 30, 60, 90) * 0.5 and 2/3
    assert batch.scales.tolist() == [[0.5, pytest.approx(2 / 3)]] * 2
    assert_boxes_cover_red(batch, margin=1)


def numbered_set(tmp_path: Path, n: int):
    rows = []
    for i in range(n):
        scene(tmp_path / "imgs" / f"{i:02d}.jpg", size=(32, 24), rects=(((2, 2, 20, 20), RED),))
        rows.append({"image_url": f"{i:02d}.jpg", "label": [obj("red", 2, 20, 2, 20)]})
    return records_for(tmp_path, rows)


def positions(loader) -> list[list[int]]:
    return [batch.indices.tolist() for batch in loader]


def test_eval_reads_every_image_once_in_order_with_partial_last_batch(tmp_path: Path) -> None:
    loader = create_loader(numbered_set(tmp_path, 7), LoaderConfig(batch_size=3, image_size=16, train=False))
    assert len(loader) == 3
    assert positions(loader) == [[0, 1, 2], [3, 4, 5], [6]]
    assert positions(loader) == [[0, 1, 2], [3, 4, 5], [6]]  # and again next epoch


def test_eval_shards_are_disjoint_and_complete(tmp_path: Path) -> None:
    records = numbered_set(tmp_path, 10)
    seen = []
    for index in range(3):
        loader = create_loader(records, LoaderConfig(batch_size=4, image_size=16, train=False), shard=Shard(index, 3))
        seen += [p for batch in positions(loader) for p in batch]
    assert sorted(seen) == list(range(10))


def test_train_shards_are_disjoint_equal_and_reshuffled(tmp_path: Path) -> None:
    records = numbered_set(tmp_path, 11)
    config = LoaderConfig(batch_size=2, image_size=16, train=True, seed=1)
    loaders = [create_loader(records, config, shard=Shard(i, 2)) for i in range(2)]
    epochs = []
    for _ in range(2):
        parts = [[p for batch in positions(loader) for p in batch] for loader in loaders]
        assert len(parts[0]) == len(parts[1]) == 5
        assert not set(parts[0]) & set(parts[1])
        epochs.append(parts)
    assert epochs[0] != epochs[1]


def test_same_seed_same_batches(tmp_path: Path) -> None:
    records = rect_set(tmp_path)

    def run(seed: int):
        loader = create_loader(records, LoaderConfig(batch_size=3, image_size=64, train=True, seed=seed))
        return [
            (b.indices.tolist(), b.images.clone(), [t["boxes"].tolist() for t in b.targets])
            for _ in range(2)
            for b in loader
        ]

    first, second, other = run(7), run(7), run(8)
    for a, b in zip(first, second, strict=True):
        assert a[0] == b[0] and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert any(a[0] != c[0] or not torch.equal(a[1], c[1]) for a, c in zip(first, other, strict=True))


def test_formats_come_out_as_rgb_and_exif_orientation_matches_boxes(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 160x120, displayed rotated 90 degrees clockwise: 120x160
    scene(tmp_path / "imgs" / "grey.jpg", mode="L")
    scene(tmp_path / "imgs" / "cmyk.jpg", mode="CMYK")
    scene(tmp_path / "imgs" / "rgba.png", mode="RGBA")
    # Stored rect x 20..70, y 30..90 -> displayed x = 120 - y: 30..90, y = x: 20..70.
    scene(tmp_path / "imgs" / "rotated.jpg", exif=exif)
    rows = [
        {"image_url": "grey.jpg", "label": [obj("o", 20, 70, 30, 90)]},
        {"image_url": "cmyk.jpg", "label": [obj("o", 20, 70, 30, 90)]},
        {"image_url": "rgba.png", "label": [obj("o", 20, 70, 30, 90)]},
        {"image_url": "rotated.jpg", "label": [obj("o", 30, 90, 20, 70)]},
    ]
    records = records_for(tmp_path, rows)
    assert records.sizes.tolist() == [[160, 120]] * 3 + [[120, 160]]
    batch = next(iter(create_loader(records, LoaderConfig(batch_size=4, image_size=64, train=False))))
    assert batch.images.shape == (4, 3, 64, 64)
    grey = batch.images[0].int()
    assert (grey[0] - grey[1]).abs().max() <= 2 and (grey[1] - grey[2]).abs().max() <= 2
    cmyk_red = is_red(batch.images[1:2])[0]
    box = batch.targets[1]["boxes"][0].int().tolist()
    assert cmyk_red[box[1] + 2 : box[3] - 2, box[0] + 2 : box[2] - 2].float().mean() > 0.95
    assert_boxes_cover_red(DetectionBatch(batch.images[2:], batch.targets[2:], batch.indices[2:], batch.scales[2:]))


def broken_set(tmp_path: Path):
    records = numbered_set(tmp_path, 6)
    (tmp_path / "imgs" / "02.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (tmp_path / "imgs" / "04.jpg").unlink()
    return records


@pytest.mark.parametrize("train", [True, False])
def test_bad_files_error_names_the_file(tmp_path: Path, train: bool) -> None:
    loader = create_loader(broken_set(tmp_path), LoaderConfig(batch_size=2, image_size=16, train=train))
    with pytest.raises(DatasetError, match=r"imgs/0[24]\.jpg .*--on-bad-row skip"):
        positions(loader)


@pytest.mark.parametrize("train", [True, False])
def test_bad_files_skip_and_count(tmp_path: Path, train: bool) -> None:
    config = LoaderConfig(batch_size=2, image_size=16, train=train, on_bad_row="skip")
    loader = create_loader(broken_set(tmp_path), config)
    for _ in range(2):
        seen = sorted(p for batch in positions(loader) for p in batch)
        assert seen == [0, 1, 3, 5]
    assert sorted(Path(p).name for p in loader.skipped) == ["02.jpg", "04.jpg"]


def test_object_crops(tmp_path: Path) -> None:
    from trainkit.tasks import ObjectCrops

    scene(tmp_path / "imgs" / "two.png", rects=(((10, 10, 50, 50), RED), ((90, 40, 150, 110), BLUE)))
    scene(tmp_path / "imgs" / "one.png", rects=(((90, 40, 150, 110), BLUE),))
    rows = [
        {"image_url": "two.png", "label": [obj("red", 10, 50, 10, 50), obj("blue", 90, 150, 40, 110)]},
        {"image_url": "one.png", "label": [obj("blue", 90, 150, 40, 110)]},
    ]
    records = records_for(tmp_path, rows).with_classes(("blue", "red"))
    crops = next(
        iter(create_loader(records, LoaderConfig(batch_size=8, image_size=32, train=False, task=ObjectCrops())))
    )
    assert isinstance(crops, ClassificationBatch)
    assert crops.labels.tolist() == [1, 0, 0] and crops.indices.tolist() == [0, 1, 2]
    assert is_red(crops.images[:1]).float().mean() > 0.95
    blue = crops.images[1:].int()
    assert ((blue[:, 2] > 180) & (blue[:, 0] < 100)).float().mean() > 0.95


def test_to_float_normalises_on_the_device() -> None:
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(to_float(images), torch.ones(1, 3, 2, 2))
    assert torch.allclose(to_float(images, mean=(0.5,) * 3, std=(0.5,) * 3), torch.ones(1, 3, 2, 2))


def test_device_choice() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(UserError, match="torch sees no GPU"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="must be auto, cpu or cuda"):
        resolve_device("tpu")


@pytest.mark.gpu
def test_gpu_pipeline_keeps_boxes_with_pixels(tmp_path: Path) -> None:
    records = rect_set(tmp_path, suffix="jpg")
    loader = create_loader(records, LoaderConfig(batch_size=3, image_size=96, train=True, seed=5), device="cuda")
    for _ in range(3):
        for batch in loader:
            assert batch.images.device.type == "cuda"
            assert_boxes_cover_red(batch)


def test_resume_mid_epoch_gives_the_same_batches(tmp_path: Path) -> None:
    records = rect_set(tmp_path, n=6)
    config = LoaderConfig(batch_size=2, image_size=48, train=True, seed=3)

    def snapshot(batches):
        return [(b.indices.tolist(), b.images.clone(), [t["boxes"].tolist() for t in b.targets]) for b in batches]

    whole = create_loader(records, config)
    next(iter(whole))  # epoch 0, read in part
    expected = snapshot(list(iter(whole)))  # epoch 1
    resumed = create_loader(records, config)
    resumed.resume(epoch=1, batch=1)
    got = snapshot(list(iter(resumed)))
    assert len(got) == 2
    for a, b in zip(expected[1:], got, strict=True):
        assert a[0] == b[0] and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert resumed.epoch == 2


def _marker(data: bytes, code: int) -> int:
    """Offset of the first JPEG marker `code` (walking the segments from SOI)."""
    i = 2
    while data[i + 1] != code:
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return i


# JPEGs that Pillow decodes and DALI's parser refuses, as phones, scanners and scrapers write them.
QUIRKS = {
    "junk_before_sos": lambda d: d[: _marker(d, 0xDA)] + b"\x00\x11\x22\x33" + d[_marker(d, 0xDA) :],
    "junk_before_dqt": lambda d: d[: _marker(d, 0xDB)] + b"\x00" * 7 + d[_marker(d, 0xDB) :],
    "ff00_header": lambda d: d[:2] + b"\xff\x00" + d[2:],
    "truncated_app14": lambda d: d[:2] + b"\xff\xee\x00\x0eAdobe\x00" + d[2:],
}


def quirky_set(tmp_path: Path):
    """ok, the four quirks, a truncated file (nothing decodes it) and a quirk on an EXIF-rotated image."""
    exif = Image.Exif()
    exif[0x0112] = 6
    rows = []
    names = ["ok", *QUIRKS, "truncated", "rotated_quirk"]
    for i, name in enumerate(names):
        path = scene(tmp_path / "imgs" / f"{i}_{name}.jpg", exif=exif if name == "rotated_quirk" else None)
        data = path.read_bytes()
        if name in QUIRKS:
            data = QUIRKS[name](data)
        elif name == "truncated":
            data = data[: len(data) // 2]
        elif name == "rotated_quirk":
            data = QUIRKS["junk_before_sos"](data)
        path.write_bytes(data)
        label = obj("red", 30, 90, 20, 70) if name == "rotated_quirk" else obj("red", 20, 70, 30, 90)
        rows.append({"image_url": path.name, "label": [label]})
    return records_for(tmp_path, rows)


@pytest.mark.parametrize("train", [True, False])
def test_files_dali_cannot_decode_are_decoded_on_the_cpu_and_the_rest_skipped(tmp_path: Path, train: bool) -> None:
    records = quirky_set(tmp_path)
    config = LoaderConfig(batch_size=3, image_size=64, train=train, on_bad_row="skip", seed=4)
    loader = create_loader(records, config)
    for _ in range(2):  # the second epoch knows the files: no failure, the same samples
        batches = list(loader)
        assert sorted(int(i) for b in batches for i in b.indices) == [0, 1, 2, 3, 4, 6]
        for batch in batches:
            assert_boxes_cover_red(batch)  # the rotated quirk too: Pillow applies EXIF as DALI does
    on_cpu = sorted(Path(p).stem.split("_", 1)[1] for p in loader.decoded_on_cpu)
    assert on_cpu == sorted([*QUIRKS, "rotated_quirk"])
    assert [Path(p).name for p in loader.skipped] == ["5_truncated.jpg"]
    assert "cannot be decoded" in next(iter(loader.skipped.values()))


def test_under_error_only_an_undecodable_file_stops_the_epoch(tmp_path: Path) -> None:
    loader = create_loader(quirky_set(tmp_path), LoaderConfig(batch_size=3, image_size=64, train=False))
    with pytest.raises(DatasetError, match=r"5_truncated\.jpg cannot be decoded .*--on-bad-row skip"):
        list(loader)


def test_a_resumed_epoch_with_cpu_decoded_files_gives_the_same_batches(tmp_path: Path) -> None:
    records = quirky_set(tmp_path)
    config = LoaderConfig(batch_size=2, image_size=48, train=True, on_bad_row="skip", seed=9)
    straight = [b.images.clone() for b in create_loader(records, config)]
    resumed = create_loader(records, config)
    resumed.resume(0, 2)
    assert all(torch.equal(a, b.images) for a, b in zip(straight[2:], list(resumed), strict=True))


def test_more_formats_and_orientations_keep_boxes_on_their_pixels(tmp_path: Path) -> None:
    """EXIF orientations 3 and 8, a 16-bit PNG, a palette PNG with transparency, a PNG named .jpg."""
    rows = []
    for orientation, label in ((3, obj("o", 90, 140, 30, 90)), (8, obj("o", 30, 90, 90, 140))):
        exif = Image.Exif()
        exif[0x0112] = orientation  # 3: turned 180 degrees; 8: 90 degrees counter-clockwise
        scene(tmp_path / "imgs" / f"exif{orientation}.jpg", exif=exif)
        rows.append({"image_url": f"exif{orientation}.jpg", "label": [label]})
    scene(tmp_path / "imgs" / "palette.png", mode="P")
    scene(tmp_path / "imgs" / "named.jpg", fmt="PNG")
    rows += [{"image_url": n, "label": [obj("o", 20, 70, 30, 90)]} for n in ("palette.png", "named.jpg")]
    palette = Image.open(tmp_path / "imgs" / "palette.png")
    palette.save(tmp_path / "imgs" / "palette.png", transparency=0)
    deep = np.full((120, 160), 9000, np.uint16)
    deep[30:90, 20:70] = 60000  # a bright object on a 16-bit grey background
    Image.fromarray(deep).save(tmp_path / "imgs" / "deep.png")
    rows.append({"image_url": "deep.png", "label": [obj("o", 20, 70, 30, 90)]})
    records = records_for(tmp_path, rows)
    loader = create_loader(records, LoaderConfig(batch_size=5, image_size=64, train=False, on_bad_row="skip"))
    [batch] = list(loader)
    assert len(batch.indices) == 5 and not loader.skipped
    assert_boxes_cover_red(DetectionBatch(batch.images[:4], batch.targets[:4], batch.indices[:4], batch.scales[:4]))
    x0, y0, x1, y1 = (int(v) for v in batch.targets[4]["boxes"][0])
    grey = batch.images[4].float().mean(0)
    assert grey[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].mean() > grey[:, x1 + 4 :].mean() + 100


def test_large_images_are_decoded_reduced_with_boxes_on_their_pixels(tmp_path: Path, monkeypatch) -> None:
    """Above the size limit (lowered here; 40 MP in use) Pillow decodes at reduced size before DALI:
    a JPEG by DCT scaling (also EXIF-rotated), a PNG by reducing; boxes stay on their pixels."""
    from trainkit.loading import large_images

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 1200x1600, displayed 1600x1200 after a 90-degree turn
    stored = ((360, 600, 840, 1100), RED)  # displayed (turned clockwise): x 500..1000, y 360..840
    scene(tmp_path / "imgs" / "big.jpg", size=(1200, 1600), rects=(stored,), exif=exif)
    scene(tmp_path / "imgs" / "big.png", size=(1600, 1200), rects=(((500, 360, 1000, 840), RED),))
    scene(tmp_path / "imgs" / "small.png")
    label = obj("red", 500, 1000, 360, 840)
    records = records_for(tmp_path, [{"image_url": "big.jpg", "label": [label]},
                                     {"image_url": "big.png", "label": [label]},
                                     {"image_url": "small.png", "label": [obj("red", 20, 70, 30, 90)]}])  # fmt: skip
    monkeypatch.setattr(large_images, "LARGE_IMAGE_PIXELS", 1_000_000)
    calls = []
    real = large_images.reduced

    def counted(data, width, height, window, out_size):
        encoded, reduced_window = real(data, width, height, window, out_size)
        calls.append((width, height, reduced_window))
        return encoded, reduced_window

    monkeypatch.setattr("trainkit.loading.loader.reduced", counted)
    for train in (False, True):
        loader = create_loader(records, LoaderConfig(batch_size=3, image_size=96, train=train, seed=3))
        for _ in range(3 if train else 1):
            for batch in loader:
                assert len(batch.indices) == 3
                assert_boxes_cover_red(batch, margin=3)
    assert {(w, h) for w, h, _ in calls} == {(1600, 1200)} and len(calls) == 2 * 4
    full = [w for _, _, w in calls[:2]]  # evaluation: whole images, at most twice the needed size
    assert all(96 <= min(w.width, w.height) < 2 * 96 + 2 for w in full), full


def test_the_decoders_own_stderr_lines_are_kept_apart_and_others_pass(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    from trainkit.data.native_messages import installed

    with installed() as messages:
        start = messages.position()
        os.write(2, b"\x1b[0;31m[ERROR] \x1b[0m[jpeg_parser] Invalid marker\n")  # as nvImageCodec prints it
        os.write(2, b"a line of someone else's\n")
        with installed() as inner:  # nested: the same filter
            assert inner is messages
        assert messages.since(start) == ["jpeg_parser: Invalid marker"]
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "a line of someone else's\n" in err and "after\n" in err
    assert "Invalid marker" not in err and "trainkit-sync" not in err


def test_a_partial_line_that_is_not_the_decoders_passes_at_once(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    from trainkit.data.native_messages import installed

    with installed() as messages:
        os.write(2, b"\r 40%|####      | 4/10")  # a progress bar: no newline until it ends
        messages.sync()
        assert "4/10" in capfd.readouterr().err
