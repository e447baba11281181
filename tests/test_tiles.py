"""Tiling: the windows, the targets of a cut object, the merge, the loader's tile samples and batches,
the tile settings of train/predict/the served model, and the same boxes from every runtime."""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import obj, write_labels
from PIL import Image
from trained import assert_same_answer, sample_images

from trainkit.batch import LoaderConfig
from trainkit.classmap import ClassMap
from trainkit.data.dataset import DatasetOptions, DatasetPair, load_pair
from trainkit.data.object_sizes import object_sizes
from trainkit.errors import UserError
from trainkit.geometry.tile_merge import merge, per_image
from trainkit.geometry.tiles import IGNORE_LABEL, tile_windows, window_targets
from trainkit.geometry.windows import Window
from trainkit.loading.loader import create_loader
from trainkit.params import CommonParams, TileSpec, override_tiles, parse_grid, parse_params, tile_spec
from trainkit.tasks.detection import IGNORE_FILL

ROOT = Path(__file__).resolve().parents[1]


def coverage(windows: list[Window], width: int, height: int) -> np.ndarray:
    counts = np.zeros((height, width), np.int32)
    for w in windows:
        assert min(w.x0, w.y0) >= 0 and w.x0 + w.width <= width and w.y0 + w.height <= height, w
        counts[w.y0 : w.y0 + w.height, w.x0 : w.x0 + w.width] += 1
    return counts


@pytest.mark.parametrize(("width", "height"), [(1600, 1200), (1001, 777), (640, 480), (97, 3000)])
@pytest.mark.parametrize(("grid", "overlap"), [((3, 2), 0.25), ((4, 4), 0.1), ((2, 3), 0.0), ((5, 1), 0.5)])
def test_a_grid_covers_every_pixel_with_the_asked_overlap_inside_the_image(width, height, grid, overlap) -> None:
    spec = TileSpec(grid=grid, overlap=overlap, whole=False)
    windows = tile_windows(width, height, spec)
    assert len(windows) == grid[0] * grid[1]
    assert coverage(windows, width, height).min() >= 1
    tile_w, tile_h = windows[0].width, windows[0].height
    assert all((w.width, w.height) == (tile_w, tile_h) for w in windows)
    xs = sorted({w.x0 for w in windows})
    ys = sorted({w.y0 for w in windows})
    assert xs[0] == 0 and xs[-1] + tile_w == width and ys[0] == 0 and ys[-1] + tile_h == height
    for starts, side in ((xs, tile_w), (ys, tile_h)):
        for a, b in itertools.pairwise(starts):
            # Neighbours share the asked share of a tile, to the pixel (rounding only ever adds).
            assert overlap * side - 1 <= side - (b - a) <= overlap * side + 2, (starts, side)


def test_the_whole_image_comes_first_and_a_grid_finer_than_the_image_gives_pixel_tiles() -> None:
    windows = tile_windows(1600, 1200, TileSpec(grid=(3, 2)))
    assert windows[0] == Window(0, 0, 1600, 1200) and len(windows) == 7
    tiny = tile_windows(10, 6, TileSpec(grid=(20, 20), whole=False))
    assert all(w.width == 1 and w.height == 1 for w in tiny) and len(tiny) == 60
    assert coverage(tiny, 10, 6).min() == 1
    # One tile across (a 1x1 grid, or tiles larger than the image): the whole image, once.
    assert tile_windows(300, 200, TileSpec(grid=(1, 1))) == [Window(0, 0, 300, 200)]
    assert tile_windows(300, 200, TileSpec(size=512)) == [Window(0, 0, 300, 200)]


def test_tiles_of_a_size_overlap_by_at_least_the_asked_share() -> None:
    windows = tile_windows(1600, 1200, TileSpec(size=640, whole=False))
    assert all((w.width, w.height) == (640, 640) for w in windows)
    assert coverage(windows, 1600, 1200).min() >= 1
    xs = sorted({w.x0 for w in windows})
    assert all(640 - (b - a) >= 0.25 * 640 for a, b in itertools.pairwise(xs))


def test_a_cut_object_keeps_its_box_above_the_visible_share_else_becomes_an_ignore_region() -> None:
    window = Window(100, 0, 100, 100)
    boxes = np.array([[120, 10, 140, 30], [90, 10, 110, 30], [85, 40, 105, 60], [10, 10, 20, 20]], np.float64)
    rel, ids = window_targets(boxes, np.array([0, 1, 2, 1]), window, min_visible=0.5)
    # Wholly inside: kept; half inside (0.5): kept, clipped; a quarter inside: ignored; outside: dropped.
    assert ids.tolist() == [0, 1, IGNORE_LABEL]
    np.testing.assert_allclose(rel * 100, [[20, 10, 40, 30], [0, 10, 10, 30], [0, 40, 5, 60]], atol=1e-4)
    _, stricter = window_targets(boxes, np.array([0, 1, 2, 1]), window, min_visible=0.6)
    assert stricter.tolist() == [0, IGNORE_LABEL, IGNORE_LABEL]
    flipped, _ = window_targets(boxes[:1], np.array([0]), Window(100, 0, 100, 100, flip=True), 0.5)
    np.testing.assert_allclose(flipped * 100, [[60, 10, 80, 30]], atol=1e-4)


def test_an_object_on_the_seam_of_four_tiles_gives_one_box() -> None:
    spec = TileSpec(grid=(2, 2), whole=True)
    windows = tile_windows(200, 200, spec)
    truth = np.array([90.0, 92.0, 110.0, 108.0])  # inside every tile's overlap and the whole image
    outputs, corners = [], []
    for i, w in enumerate(windows):
        scale = np.array([w.width, w.height, w.width, w.height]) / 64
        seen = (truth - [w.x0, w.y0, w.x0, w.y0]) / scale + (i % 2) * 0.3  # each window off by a little
        outputs.append({"boxes": seen[None].astype(np.float32), "scores": np.array([0.9 - 0.01 * i], np.float32),
                        "labels": np.array([1])})  # fmt: skip
        corners.append(w.xyxy()[0])
    for method in ("nms", "nmm"):
        spec_m = TileSpec(grid=(2, 2), merge=method)
        found = per_image(outputs, np.array(corners), np.zeros(len(windows), int), 64, np.array([[200, 200]]), spec_m)
        (_, boxes, scores, labels), = found  # fmt: skip
        assert len(boxes) == 1 and labels.tolist() == [1] and scores[0] == pytest.approx(0.9)
        np.testing.assert_allclose(boxes[0], truth, atol=1.5)


def test_nmm_joins_the_halves_of_a_cut_object_and_nms_keeps_other_classes_apart() -> None:
    # A 100 px object cut by two tiles overlapping over x 50-70: each sees it up to its own edge.
    halves = np.array([[0, 0, 70, 40], [50, 0, 100, 40]], np.float32)
    boxes, scores, _ = merge(halves, np.array([0.8, 0.7]), np.array([0, 0]), 0.25, "nmm")
    assert boxes.tolist() == [[0, 0, 100, 40]] and scores.tolist() == pytest.approx([0.8])
    same_place = np.array([[0, 0, 50, 50], [0, 0, 50, 50]], np.float32)
    _, _, kept = merge(same_place, np.array([0.9, 0.8]), np.array([0, 1]), 0.25, "nms")
    assert sorted(kept.tolist()) == [0, 1]


def test_tile_settings_are_checked_and_named() -> None:
    spec = tile_spec(parse_params(CommonParams, {"tile_grid": "3x2", "tile_overlap": 0.2, "tile_nms": 0.5}))
    assert spec == TileSpec(grid=(3, 2), overlap=0.2, nms=0.5)
    assert tile_spec(CommonParams()) is None
    assert parse_grid("4X3") == (4, 3) and parse_grid("none") is None
    cases = [({"tile_grid": "3by2"}, "tile_grid '3by2': write COLUMNSxROWS"),
             ({"tile_grid": "3x2", "tile_overlap": 1.0}, "'tile_overlap' = 1.0 is out of range"),
             ({"tile_grid": "3x2", "tile_nms": 0}, "'tile_nms' = 0.0 is out of range"),
             ({"tile_grid": "3x2", "tile_merge": "wbf"}, "'tile_merge' = 'wbf' is out of range: one of nms, nmm"),
             ({"tile_size": 4}, "'tile_size' = 4 is out of range"),
             ({"tile_grid": "2x2", "tile_size": 640}, "'tile_grid' and 'tile_size' both set")]  # fmt: skip
    for raw, message in cases:
        with pytest.raises(UserError, match=message):
            parse_params(CommonParams, raw)
    # Prediction's overrides: a model trained without tiles predicts on them; none turns them off.
    assert override_tiles(None, {"grid": "2x2", "nms": 0.5}) == TileSpec(grid=(2, 2), nms=0.5)
    assert override_tiles(TileSpec(grid=(3, 2)), {"grid": "none"}) is None
    assert override_tiles(TileSpec(grid=(3, 2)), {"size": 640}) == TileSpec(size=640)
    with pytest.raises(ValueError, match="give tile_grid"):
        override_tiles(None, {"overlap": 0.1})
    with pytest.raises(ValueError, match="tile_gird is no tile setting; they are tile_grid, tile_size"):
        override_tiles(None, {"gird": "2x2"})


def scenes_set(tmp_path: Path, count: int = 3, size: tuple[int, int] = (240, 160)) -> tuple[Path, Path]:
    """Images with one small square each (in the top-left tile's overlap with its right neighbour) and
    one cut by that tile's right edge; their label rows."""
    rows = []
    for i in range(count):
        image = np.full((size[1], size[0], 3), 40 + 20 * i, np.uint8)
        image[20:36, 110:126] = (230, 60, 60)
        image[60:80, 90:130] = (60, 220, 80)
        Image.fromarray(image).save(tmp_path / f"scene{i}.png")
        rows.append({"image_url": f"scene{i}.png", "label": [obj("square", 110, 126, 20, 36),
                                                            obj("bar", 90, 130, 60, 80)]})  # fmt: skip
    return tmp_path, write_labels(tmp_path / "labels.csv", rows)


def test_training_reads_every_tile_once_an_epoch_shuffled_across_images_with_cut_objects_painted_out(
    tmp_path: Path,
) -> None:
    images, labels = scenes_set(tmp_path)
    records, _ = load_pair(DatasetPair(images, labels, datastore_name=""), DatasetOptions(datastore_name=""))
    spec = TileSpec(grid=(2, 2), min_visible=0.6)  # 240x160: tiles 138x92, the first ending at x 138
    loader = create_loader(records, LoaderConfig(batch_size=4, image_size=64, train=True, hflip=0.0,
                                                 random_crop=False, tiles=spec, seed=3))  # fmt: skip
    seen = []
    for batch in loader:
        for i in range(len(batch.indices)):
            corner = tuple(batch.windows[i].tolist())
            seen.append((int(batch.indices[i]), corner))
            if corner == (0.0, 0.0, 138.0, 92.0):
                # The bar (x 90-130 of 138) is inside; the square is too. The top-left tile holds both whole.
                assert len(batch.targets[i]["boxes"]) == 2
            if corner == (102.0, 0.0, 240.0, 92.0):
                # The bar is 28 of 40 px inside (0.7 >= 0.6): kept; so is the square (wholly inside).
                assert len(batch.targets[i]["boxes"]) == 2
    assert sorted(seen) == sorted({(i, tuple(map(float, w.xyxy()[0]))) for i in range(3)
                                   for w in tile_windows(240, 160, spec)})  # fmt: skip
    assert len(seen) == len(set(seen)) == 15
    assert [i for i, _ in seen] != sorted(i for i, _ in seen)  # shuffled across images, not image by image
    # With a stricter share, the bar in the right tile is an ignore region: grey, and no target.
    strict = create_loader(records, LoaderConfig(batch_size=15, image_size=138, train=True, hflip=0.0,
                                                 random_crop=False, tiles=TileSpec(grid=(2, 2), min_visible=0.8),
                                                 seed=3))  # fmt: skip
    batch = next(iter(strict))
    i = [tuple(w.tolist()) for w in batch.windows].index((102.0, 0.0, 240.0, 92.0))
    assert len(batch.targets[i]["boxes"]) == 1  # the square only
    scale = 138 / 138, 138 / 92
    y0, y1 = round(60 * scale[1]), round(80 * scale[1])
    region = batch.images[i, :, y0 + 2 : y1 - 2, 2 : round(28 * scale[0]) - 2]
    assert (region == IGNORE_FILL).all()


def test_evaluation_batches_hold_every_window_of_an_image_from_one_decode(tmp_path: Path) -> None:
    images, labels = scenes_set(tmp_path, count=3)
    records, _ = load_pair(DatasetPair(images, labels, datastore_name=""), DatasetOptions(datastore_name=""))
    spec = TileSpec(grid=(2, 2))
    batches = list(create_loader(records, LoaderConfig(batch_size=2, image_size=64, train=False, tiles=spec)))
    assert [b.indices.tolist() for b in batches] == [[0] * 5 + [1] * 5, [2] * 5]
    first = batches[0]
    assert [tuple(w.tolist()) for w in first.windows[:5]] == [tuple(map(float, w.xyxy()[0]))
                                                             for w in tile_windows(240, 160, spec)]  # fmt: skip
    # A window's pixels are the image's, cut and resized: the red square lies where its box says.
    red = first.images[1].permute(1, 2, 0).numpy()  # the top-left tile, 138x92 -> 64x64
    ys, xs = np.nonzero((red[:, :, 0] > 200) & (red[:, :, 1] < 100))
    assert abs(xs.mean() - 118 * 64 / 138) < 1.5 and abs(ys.mean() - 28 * 64 / 92) < 1.5


def test_validate_reports_small_objects_and_names_a_grid(tmp_path: Path, run_cli) -> None:
    from trainkit.data.demo import write_demo_dataset

    scenes = write_demo_dataset(tmp_path / "scenes", images=4, kind="scenes")
    records, _ = load_pair(DatasetPair(scenes.imageset_studio, scenes.labels_csv, datastore_name=""),
                           DatasetOptions(datastore_name=""))  # fmt: skip
    sizes = object_sizes(records, 512)
    assert sizes is not None and sizes.median_image == (1600.0, 1200.0)
    assert sizes.under_16 > 0.8 * sizes.objects and sizes.grid is not None
    # The grid named brings the tenth-percentile object to 16 px: check it with the tiles it names.
    tile = tile_windows(1600, 1200, TileSpec(grid=sizes.grid, whole=False))[0]
    wh = records.boxes[:, 2:] - records.boxes[:, :2]
    at_input = np.minimum(wh[:, 0] * 512 / tile.width, wh[:, 1] * 512 / tile.height)
    assert np.quantile(at_input, 0.1) >= 15.5
    result = run_cli("validate", "--imageset", scenes.imageset_studio, "--labelset", scenes.labels_csv,
                     "--datastore-name", "", "--image-size", "512")  # fmt: skip
    assert result.code == 0, result.err
    assert f"tile_grid={sizes.grid[0]}x{sizes.grid[1]}" in result.out and "under 16 px" in result.out
    shapes = write_demo_dataset(tmp_path / "shapes", images=6)
    result = run_cli("validate", "--imageset", shapes.imageset_studio, "--labelset", shapes.labels_csv,
                     "--datastore-name", "", "--image-size", "192")  # fmt: skip
    assert "0 under 16 px" not in result.out and "tile_grid" not in result.out
    assert re.search(r"at image_size 192: 0 of \d+ under 16 px", result.out), result.out
    refused = run_cli("validate", "--imageset", shapes.imageset_studio, "--labelset", shapes.labels_csv,
                      "--datastore-name", "", "--image-size", "0")  # fmt: skip
    last = refused.err.strip().splitlines()[-1]
    assert refused.code == 2 and last.endswith("--image-size 0: the trainer's image_size, at least 32 pixels"), last


PARITY_CLASSES = ClassMap(("circle", "square", "triangle"))
CUT = 0.5


def test_predict_the_pyfunc_and_onnxruntime_tile_alike(run_cli, tmp_path: Path) -> None:
    """The served model tiles exactly as `predict` does: the same boxes, within 1 px, from predict's CSV
    (the loader's decode, cut in torch), the pyfunc (Pillow's decode), and the ONNX model."""
    import mlflow.pyfunc
    from test_inference import _from_row
    from trained import built_model_dir

    from trainkit.inference.onnx_export import export_onnx
    from trainkit.inference.onnx_predictor import OnnxPredictor
    from trainkit.inference.predictor import load_predictor

    overrides = {"image_size": 96, "tile_grid": "2x2", "tile_overlap": 0.5}
    folder = built_model_dir(ROOT / "trainers" / "skeleton", tmp_path / "run" / "model", overrides, PARITY_CLASSES, 60)
    predictor = load_predictor(folder)
    assert predictor.tiles == TileSpec(grid=(2, 2), overlap=0.5)
    export_onnx(predictor, tmp_path / "model.onnx")
    assert OnnxPredictor(tmp_path / "model.onnx").tiles == predictor.tiles
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    images = sample_images(predictor.trainer, 96)  # 192 x 192: tiles of 128 px, halfway overlapping
    for seed, image in enumerate(images):
        Image.fromarray(image).save(images_dir / f"scene{seed}.png")
    floor = CUT - 0.05
    common = ["--imageset", images_dir, "--datastore-name", "", "--draw", "0", "--min-score", str(floor)]
    csvs = {}
    for name, model in (("torch", folder), ("onnx", tmp_path / "model.onnx")):
        result = run_cli("predict", "--model", model, "--output-dir", tmp_path / name, *common)
        assert result.code == 0, result.err
        csvs[name] = [_from_row(row) for _, row in pd.read_csv(tmp_path / name / "predictions.csv").iterrows()]
    served = mlflow.pyfunc.load_model(str(folder))
    answer = served.predict([str(images_dir / f"scene{seed}.png") for seed in range(len(images))],
                            params={"min_score": floor})  # fmt: skip
    from_pyfunc = [_from_automl(boxes, 192) for boxes in answer["boxes"]]
    compared = 0
    for by_csv, by_onnx, by_pyfunc in zip(csvs["torch"], csvs["onnx"], from_pyfunc, strict=True):
        compared += assert_same_answer(by_csv, by_onnx, CUT)
        compared += assert_same_answer(by_csv, by_pyfunc, CUT, score_tol=1e-2)
    assert compared >= 2 * len(images), compared
    # A request's tile_grid none: whole images only, as a predictor without tiles answers.
    whole = served.predict([str(images_dir / "scene0.png")], params={"min_score": floor, "tile_grid": "none"})
    untiled = copy.copy(predictor)
    untiled.with_tiles(None)
    assert untiled.tiles is None and predictor.tiles is not None
    compared = assert_same_answer(untiled.predict(images[:1], floor)[0], _from_automl(whole["boxes"][0], 192), CUT,
                                  score_tol=1e-2)  # fmt: skip
    assert compared >= 1
    bad = run_cli("predict", "--model", folder, "--output-dir", tmp_path / "bad", *common, "--tile-overlap", "1.5")
    assert bad.code == 2 and "--tile-overlap = 1.5 is out of range" in bad.err.strip().splitlines()[-1], bad.err


def _from_automl(boxes: list[dict], side: int):
    """An AutoML answer's boxes (normalised corners) back as a Prediction in pixels of a side x side image."""
    from trainkit.inference.predictor import Prediction

    xyxy = np.array([[b["box"]["topX"], b["box"]["topY"], b["box"]["bottomX"], b["box"]["bottomY"]]
                     for b in boxes], np.float32).reshape(-1, 4) * side  # fmt: skip
    labels = np.array([PARITY_CLASSES.names.index(b["label"]) for b in boxes], np.int64)
    return Prediction(side, side, xyxy, labels, np.array([b["score"] for b in boxes], np.float32))


def test_a_classifier_refuses_tiles_in_one_line() -> None:
    from trainkit.training.discovery import load_trainer

    trainer = load_trainer(str(ROOT / "trainers" / "classifier")).trainer
    params = parse_params(trainer.Params, {"tile_grid": "2x2"})
    with pytest.raises(UserError, match="'tile_grid'/'tile_size' are for detection trainers"):
        trainer.loader_config(params, True)


def test_a_part_cut_by_a_tile_edge_gives_way_to_the_whole_object_when_the_whole_image_is_a_window() -> None:
    """A large object cut by a tile: the tile's clipped part (scored higher here) leaves the merge to the
    whole image's box; without the whole image among the windows, the part is all there is and stays."""
    windows = np.array([[0, 0, 200, 200], [0, 0, 115, 115]], np.float32)  # the whole image, a 2x2 grid's tile
    big = np.array([60.0, 20.0, 180.0, 100.0])  # cut by the tile's right edge at x 115
    outputs = [
        {"boxes": (big / 200 * 64)[None].astype(np.float32), "scores": np.array([0.7], np.float32),
         "labels": np.array([0])},
        {"boxes": (np.array([[60.0, 20.0, 115.0, 100.0]]) / 115 * 64).astype(np.float32),
         "scores": np.array([0.9], np.float32), "labels": np.array([0])},
    ]  # fmt: skip
    sizes = np.array([[200, 200]])
    [(_, boxes, scores, _)] = per_image(outputs, windows, np.zeros(2, int), 64, sizes, TileSpec(grid=(2, 2)))
    np.testing.assert_allclose(boxes, [big], atol=0.01)
    assert scores.tolist() == pytest.approx([0.7])
    [(_, boxes, _, _)] = per_image(outputs[1:], windows[1:], np.zeros(1, int), 64, sizes,
                                   TileSpec(grid=(2, 2), whole=False))  # fmt: skip
    np.testing.assert_allclose(boxes, [[60, 20, 115, 100]], atol=0.01)
