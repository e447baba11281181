"""Label sets in AzureML's own formats (AutoML JSON Lines, COCO) read into the same records as the table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image

from trainkit.data.dataset import DataConfig, DatasetOptions, DatasetPair, load_dataset, load_pair
from trainkit.data.label_sets import read_labels

SKELETON = Path(__file__).resolve().parents[1] / "trainers" / "skeleton"


def images(root: Path, names: list[str], size=(200, 100)) -> Path:
    for name in names:
        make_image(root / name, size)
    return root


def od_line(url: str, *objects: tuple, **extra) -> str:
    label = [{"label": n, "topX": x0, "topY": y0, "bottomX": x1, "bottomY": y1, **({"isCrowd": c} if c else {})}
             for n, x0, y0, x1, y1, c in objects]  # fmt: skip
    return json.dumps({"image_url": url, "image_details": {"format": "jpg", "width": "200px", "height": "100px"},
                       "label": label, **extra})  # fmt: skip


def jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_automl_jsonl_maps_corners_by_its_own_definition(tmp_path: Path) -> None:
    root = images(tmp_path / "mount" / "ds", ["a.jpg", "b.jpg", "c.jpg"])
    labels = jsonl(tmp_path / "train.jsonl", [
        od_line("azureml://datastores/ds/paths/a.jpg", ("can", 0.1, 0.2, 0.5, 0.6, 0),
                ("carton", 0.5, 0.5, 0.9, 0.9, 0)),
        od_line("AmlDatastore://ds/b.jpg", ("can", 0.0, 0.0, 1.0, 1.0, 1)),
        od_line("azureml://datastores/ds/paths/c.jpg"),
    ])  # fmt: skip
    records, report = load_pair(DatasetPair(tmp_path / "mount", labels), DatasetOptions())
    assert report.label_format == "jsonl (AutoML for images)" and report.box_units == "relative"
    assert report.image_root == str(root) and not report.problems
    assert records.boxes.tolist() == [[20, 20, 100, 60], [100, 50, 180, 90]]
    assert report.crowd_regions == 1 and records.crowd.of(1)[0].tolist() == [[0, 0, 200, 100]]
    assert report.images_without_objects == 2  # b has only a crowd region, c nothing


def test_the_arrow_path_and_the_line_path_agree(tmp_path: Path) -> None:
    lines = [od_line(f"{i}.jpg", ("a", 0.1 * i, 0.1, 0.1 * i + 0.2, 0.5, 0), ("b", 0.05, 0.2, 0.3, 0.4, i % 2))
             for i in range(1, 5)]  # fmt: skip
    fast = read_labels(jsonl(tmp_path / "fast.jsonl", lines))
    slow = read_labels(jsonl(tmp_path / "slow.jsonl", [*lines[:2], "", *lines[2:]]))  # a blank line: by line
    assert slow.table.row_number.tolist() == [1, 2, 4, 5] and fast.table.row_number.tolist() == [1, 2, 3, 4]
    for field in ("counts", "class_codes", "boxes", "crowd"):
        assert np.array_equal(getattr(fast.parsed, field), getattr(slow.parsed, field)), field
    assert fast.parsed.vocab == slow.parsed.vocab == ("a", "b")


def test_bad_lines_name_the_file_and_line(tmp_path: Path) -> None:
    images(tmp_path / "imgs", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    bad = od_line("b.jpg", ("can", 0.1, 0.2, 0.5, 0.6, 0)).replace('"topX": 0.1, ', "")
    labels = jsonl(tmp_path / "l.jsonl", [od_line("a.jpg", ("can", 0.1, 0.2, 0.5, 0.6, 0)), bad, "{not json",
                                          json.dumps({"image_url": "d.jpg", "label": "can"})])  # fmt: skip
    dataset = load_dataset(DataConfig(DatasetPair(tmp_path / "imgs", labels),
                                      options=DatasetOptions(datastore_name="", on_bad_row="skip")))  # fmt: skip
    report = dataset.reports[0]
    assert report.problems == {"label_box": 1, "json": 1, "label_structure": 1}
    assert report.problem_examples[0] == (
        f"{labels} line 2, field 'label': object 1 'topX' is None, expected a number 0..1"
    )
    assert "line 3, field 'line': not JSON" in report.problem_examples[1]
    assert "line 4, field 'label': label holds class names (image classification) but the first labelled line " \
           "holds boxes (object detection); one label set is one task" in report.problem_examples[2]  # fmt: skip
    assert len(dataset.train) == 1 and dataset.usable("skip") is None
    assert "line 2" in dataset.usable("error")


def test_classification_jsonl_and_an_mltable_with_read_json_lines(tmp_path: Path) -> None:
    images(tmp_path / "imgs", ["a.jpg", "b.jpg", "c.jpg"])
    folder = tmp_path / "mlt"
    folder.mkdir()
    jsonl(folder / "part.jsonl", [json.dumps({"image_url": "a.jpg", "label": "can"}),
                                 json.dumps({"image_url": "b.jpg", "label": ["can", "milk"]}),
                                 json.dumps({"image_url": "c.jpg", "label": []})])  # fmt: skip
    (folder / "MLTable").write_text(
        "paths:\n  - file: ./part.jsonl\ntransformations:\n  - read_json_lines:\n      encoding: utf8\n"
        "      invalid_lines: error\n  - convert_column_types:\n      - columns: image_url\n"
        "        column_type: stream_info\n"
    )
    records, report = load_pair(DatasetPair(tmp_path / "imgs", folder), DatasetOptions(datastore_name=""))
    assert not report.problems and report.label_format == "jsonl (AutoML for images)"
    assert [records.classes[i] for i in records.class_ids] == ["can", "can", "milk"]
    assert records.boxes.tolist() == [[0, 0, 200, 100]] * 3  # whole images
    assert np.diff(records.offsets).tolist() == [1, 2, 0]


def coco(path: Path, images_: list[dict], annotations: list[dict], categories=None) -> Path:
    cats = categories or [{"id": 1, "name": "can"}, {"id": 2, "name": "milk"}]
    path.write_text(json.dumps({"images": images_, "annotations": annotations, "categories": cats}))
    return path


def test_coco_pixel_boxes_crowd_and_images_without_annotations(tmp_path: Path) -> None:
    images(tmp_path / "imgs", ["a.jpg", "b.jpg", "c.jpg"])
    labels = coco(tmp_path / "coco.json", [
        {"id": 1, "file_name": "a.jpg", "width": 200, "height": 100},
        {"id": 2, "file_name": "b.jpg", "width": 200, "height": 100},
        {"id": 3, "file_name": "c.jpg", "width": 200, "height": 100},
    ], [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 20, 50, 40], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 2, "bbox": [100, 10, 80, 80], "iscrowd": 1},
        {"id": 12, "image_id": 3, "category_id": 9, "bbox": [1, 1, 5, 5]},
    ])  # fmt: skip
    records, report = load_pair(DatasetPair(tmp_path / "imgs", labels),
                                DatasetOptions(datastore_name="", on_bad_row="skip"))  # fmt: skip
    assert report.label_format == "coco" and report.box_units_reason == "coco: bbox in pixels"
    assert records.boxes.tolist() == [[10, 20, 60, 60]] and report.crowd_regions == 1
    assert report.problems == {"label_class": 1}
    assert report.problem_examples[0] == (
        f"{labels} image id 3, field 'annotations': annotation 12: category_id 9 is not in 'categories'"
    )
    assert len(records) == 2 and np.diff(records.offsets).tolist() == [1, 0]  # b: an image with no objects


def test_coco_as_data_labeling_writes_it_is_normalised_with_uris(tmp_path: Path) -> None:
    images(tmp_path / "mount" / "workspaceblobstore" / "UI", ["a.jpg"])
    labels = coco(tmp_path / "coco.json", [
        {"id": 1, "width": 0, "height": 0, "file_name": "UI/a.jpg",
         "coco_url": "AmlDatastore://workspaceblobstore/UI/a.jpg"},
    ], [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.25, 0.5, 0.5, 0.25]}])  # fmt: skip
    records, report = load_pair(DatasetPair(tmp_path / "mount", labels), DatasetOptions())
    assert "width and height are 0" in report.box_units_reason and report.box_units == "relative"
    assert records.boxes.tolist() == [[50, 50, 150, 75]]
    assert report.image_urls.startswith("AmlDatastore://workspaceblobstore/UI/a.jpg -> ")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"images": []}, "needs 'images' and 'categories' lists"),
        (
            {"images": [], "annotations": [{"id": 4, "image_id": 8}], "categories": []},
            "annotation 4 names image_id 8, which is not in 'images'",
        ),
        ({"images": [{"id": 1}, {"id": 1}], "categories": []}, "image id 1 is listed twice"),
    ],
)
def test_coco_structure_errors_are_one_line(tmp_path: Path, content: dict, message: str) -> None:
    from trainkit.errors import DatasetError

    (tmp_path / "c.json").write_text(json.dumps(content))
    images(tmp_path / "imgs", ["a.jpg"])
    with pytest.raises(DatasetError, match=message):
        load_pair(DatasetPair(tmp_path / "imgs", tmp_path / "c.json"), DatasetOptions(datastore_name=""))


@pytest.mark.parametrize("kind", ["jsonl", "coco", "yolo"])
def test_one_training_epoch_on_each_format(run_cli, tmp_path: Path, kind: str) -> None:
    from trainkit.data.demo import write_demo_dataset

    demo = write_demo_dataset(tmp_path / "demo", images=8, seed=3)
    from trainkit.data.label_sets import read_labels as read

    source = read(demo.labels_csv)
    rows = source.parsed
    sizes = {}
    from PIL import Image

    for url in source.table.image_url.to_pylist():
        with Image.open(demo.imageset_studio / url) as image:
            sizes[url] = image.size
    offsets = rows.offsets
    if kind == "jsonl":
        lines = []
        for r, url in enumerate(source.table.image_url.to_pylist()):
            w, h = sizes[url]
            objs = [(rows.vocab[rows.class_codes[j]], *(rows.boxes[j] / [w, h, w, h]).tolist(), j == 0)
                    for j in range(offsets[r], offsets[r + 1])]  # fmt: skip
            lines.append(od_line(url, *objs))
        labels = jsonl(tmp_path / "demo.jsonl", lines)
    elif kind == "yolo":
        labels = tmp_path / "yolo"
        converted = run_cli("convert", "--labelset", demo.labels_csv, "--imageset", demo.imageset_studio,
                            "--to", "yolo", "--output", labels)  # fmt: skip
        assert converted.code == 0, converted.err
    else:
        names = list(rows.vocab)
        imgs = [{"id": r + 1, "file_name": url, "width": sizes[url][0], "height": sizes[url][1]}
                for r, url in enumerate(source.table.image_url.to_pylist())]  # fmt: skip
        anns = [{"id": j + 1, "image_id": r + 1, "category_id": int(rows.class_codes[j]) + 1, "iscrowd": int(j == 0),
                 "bbox": [*rows.boxes[j][:2].tolist(), *(rows.boxes[j][2:] - rows.boxes[j][:2]).tolist()]}
                for r in range(len(imgs)) for j in range(offsets[r], offsets[r + 1])]  # fmt: skip
        labels = coco(tmp_path / "demo.json", imgs, anns, [{"id": i + 1, "name": n} for i, n in enumerate(names)])
    imageset = labels if kind == "yolo" else demo.imageset_studio
    checked = run_cli("validate", "--imageset", imageset, "--labelset", labels, "--val-fraction", 0)
    assert checked.code == 0 and f"objects    {rows.boxes.shape[0] - (kind != 'yolo')} kept" in checked.out, checked.out
    out = tmp_path / "out"
    result = run_cli("train", "--trainer", SKELETON, "--imageset", imageset, "--labelset", labels,
                     "--output-dir", out, "--device", "cpu", "--val-fraction", 0.25, "--set", "epochs=1",
                     "--set", "batch_size=2", "--set", "image_size=64", "--set", "max_steps=2")  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads((out / "metrics.json").read_text())["val"]["map"] >= 0


def _yolo_tree(root: Path) -> None:
    images(root / "images" / "train", ["a.jpg", "b.jpg", "c.jpg"])
    images(root / "images" / "val", ["d.jpg"])
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.25 0.75 0.1 0.1\n")
    (root / "labels" / "train" / "b.txt").write_text("0 0.5 0.5 0.2\n")  # four values: a bad row
    # c.jpg has no label file: an image without objects
    (root / "labels" / "val" / "d.txt").write_text("1 0.5 0.5 1 1\n")


def test_yolo_data_yaml_splits_and_folder(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    _yolo_tree(root)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [can, milk]\n")
    options = DatasetOptions(datastore_name="", on_bad_row="skip")
    records, report = load_pair(DatasetPair(root, root / "data.yaml"), options)
    assert report.label_format == "yolo" and report.box_units == "relative"
    assert report.problems == {"label_box": 1}
    assert report.problem_examples[0] == (
        f"{root / 'labels' / 'train' / 'b.txt'}, field 'label': line 1: 4 values, expected 5: class cx cy w h"
    )
    assert records.image_urls.tolist() == ["images/train/a.jpg", "images/train/c.jpg"]
    assert records.boxes.tolist() == [[80, 30, 120, 70], [40, 70, 60, 80]]
    assert [records.classes[i] for i in records.class_ids] == ["can", "milk"]
    val, _ = load_pair(DatasetPair(root, Path(f"{root / 'data.yaml'}#val")), options)
    assert val.image_urls.tolist() == ["images/val/d.jpg"] and val.boxes.tolist() == [[0, 0, 200, 100]]
    folder, _ = load_pair(DatasetPair(root, root), options)  # the folder: names from its data.yaml, every image
    assert len(folder) == 3 and folder.num_objects == 3


def test_a_yolo_folder_needs_class_names(tmp_path: Path) -> None:
    from trainkit.errors import DatasetError

    _yolo_tree(tmp_path / "y")
    with pytest.raises(DatasetError, match=r"needs its class names: a data\.yaml with names, or a classes\.txt"):
        load_pair(DatasetPair(tmp_path / "y", tmp_path / "y"), DatasetOptions(datastore_name=""))
    (tmp_path / "y" / "classes.txt").write_text("can\nmilk\n")
    records, _ = load_pair(DatasetPair(tmp_path / "y", tmp_path / "y"), DatasetOptions(datastore_name="",
                                                                                       on_bad_row="skip"))  # fmt: skip
    assert records.num_objects == 3


def test_a_detection_in_a_crowd_region_is_neither_right_nor_wrong() -> None:
    from trainkit.classmap import ClassMap
    from trainkit.tasks import Detection, Prediction, Truth

    answer = Prediction(200, 200, np.array([[10.0, 10, 50, 50], [100, 100, 180, 180]], np.float32),
                        np.array([0, 0]), np.array([0.9, 0.95], np.float32))  # fmt: skip
    one = (np.array([[10.0, 10, 50, 50]], np.float32), np.array([0]))

    def map_of(truth: Truth) -> float:
        evaluator = Detection().evaluator(ClassMap(("can",)), 0.5)
        evaluator.update(answer, truth)
        return evaluator.metrics["map"]

    assert map_of(Truth("a.png", "a.png", *one)) < 0.9  # the second detection is a false positive, and scores higher
    crowd = (np.array([[90.0, 90, 200, 200]], np.float32), np.array([0]))
    assert map_of(Truth("a.png", "a.png", *one, *crowd)) == pytest.approx(1.0)


def test_a_yolo_label_file_without_an_image_is_counted_named_and_warned(run_cli, tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    _yolo_tree(root)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [can, milk]\n")
    (root / "labels" / "train" / "e.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.2 0.2 0.1 0.1\n")  # e.png is missing
    (root / "labels" / "train" / "f.txt").write_text("1 0.5 0.5 0.2 0.4\n")
    (root / "labels" / "val" / "g.txt").write_text("1 0.5 0.5 0.2 0.4\n")  # the val split's: not train's
    options = DatasetOptions(datastore_name="", on_bad_row="skip")
    _, report = load_pair(DatasetPair(root, root / "data.yaml"), options)
    assert (report.orphan_label_files, report.orphan_objects) == (2, 3)
    assert report.orphan_label_examples == ["labels/train/e.txt", "labels/train/f.txt"]
    result = run_cli("validate", "--imageset", root, "--labelset", root / "data.yaml", "--datastore-name", "",
                     "--on-bad-row", "skip", "--val-fraction", "0")  # fmt: skip
    assert result.code == 0, result.err  # a warning: the set stays usable
    assert ("warning    2 label files have no image (3 objects, not used): labels/train/e.txt, labels/train/f.txt"
            in result.out), result.out  # fmt: skip
    _, folder = load_pair(DatasetPair(root, root), options)  # the folder form looks under all of labels/
    assert folder.orphan_label_files == 3 and folder.orphan_objects == 4
    _, val = load_pair(DatasetPair(root, Path(f"{root / 'data.yaml'}#val")), options)
    assert val.orphan_label_examples == ["labels/val/g.txt"]


def test_declared_yolo_names_are_the_class_map_in_their_order(run_cli, tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    _yolo_tree(root)
    # ids 0 and 3 occur as "can"/"milk" would: the map is all four names, in the declared order
    (root / "labels" / "train" / "a.txt").write_text("3 0.5 0.5 0.2 0.4\n0 0.25 0.75 0.1 0.1\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: zebra, 1: bus, 2: "
                                    "apple, 3: can}\n")  # fmt: skip
    val = DatasetPair(root, Path(f"{root}/data.yaml#val"))
    config = DataConfig(train=(DatasetPair(root, root / "data.yaml"),), val=(val,),
                        options=DatasetOptions(datastore_name="", on_bad_row="skip"))  # fmt: skip
    dataset = load_dataset(config)
    assert dataset.class_map.names == ("zebra", "bus", "apple", "can")
    assert [dataset.train.classes[i] for i in dataset.train.class_ids] == ["can", "zebra"]
    result = run_cli("validate", "--imageset", root, "--labelset", root / "data.yaml", "--datastore-name", "",
                     "--on-bad-row", "skip", "--val-fraction", "0")  # fmt: skip
    assert "classes    4: zebra, bus, apple, can" in result.out, result.out
    assert "with no object in the training set (kept, with their ids): apple, bus" in result.err, result.err


def test_pairs_declaring_different_classes_are_refused_naming_the_first_difference(run_cli, tmp_path: Path) -> None:
    roots = []
    for name, names in (("one", "[can, milk]"), ("two", "[can, bus, milk]")):
        roots.append(tmp_path / name)
        _yolo_tree(roots[-1])
        (roots[-1] / "data.yaml").write_text(f"path: .\ntrain: images/train\nnames: {names}\n")
    pairs = [a for root in roots for a in ("--train-set", f"{root / 'data.yaml'}:{root}:")]
    result = run_cli("validate", *pairs, "--datastore-name", "", "--on-bad-row", "skip")
    assert result.code == 2, result.err
    assert (f"{roots[0] / 'data.yaml'} and {roots[1] / 'data.yaml'} declare different classes: id 1 is 'milk' in one, "
            "'bus' in the other; pass --class-map FILE" in result.err), result.err  # fmt: skip
    (tmp_path / "map.json").write_text('["can", "milk", "bus"]')
    fixed = run_cli(
        "validate", *pairs, "--datastore-name", "", "--on-bad-row", "skip", "--class-map", tmp_path / "map.json"
    )
    assert fixed.code == 0 and "classes    3: can, milk, bus" in fixed.out, fixed.err


def test_coco_categories_are_the_class_map_by_id(tmp_path: Path) -> None:
    images(tmp_path / "imgs", ["a.jpg"])
    labels = coco(tmp_path / "coco.json", [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100}],
                  [{"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 20, 50, 40]}],
                  [{"id": 7, "name": "milk"}, {"id": 3, "name": "can"}, {"id": 12, "name": "bus"}])  # fmt: skip
    source = read_labels(labels)
    assert source.declared.names == ("can", "milk", "bus") and source.declared.ids == (3, 7, 12)
    config = DataConfig(train=(DatasetPair(tmp_path / "imgs", labels),), val_fraction=0,
                        options=DatasetOptions(datastore_name=""))  # fmt: skip
    assert load_dataset(config).class_map.names == ("can", "milk", "bus")
