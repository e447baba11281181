from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import SmallSet, make_image, obj, write_labels

from trainkit.classmap import ClassMap
from trainkit.data.dataset import (
    DataConfig,
    DatasetOptions,
    DatasetPair,
    load_dataset,
    load_dataset_strict,
    load_pair,
    split_by_image,
)
from trainkit.errors import DatasetError, UserError


def one_image_set(tmp_path: Path, objects: list[dict], size=(100, 50), confidences=None, datastore: str = ""):
    make_image(tmp_path / "imgs" / datastore / "x.jpg", size)
    row = {"image_url": "x.jpg", "label": objects}
    if confidences is not None:
        row["label_confidence"] = confidences
    return DatasetPair(tmp_path / "imgs", write_labels(tmp_path / "l.csv", [row]))


def test_pixel_boxes_are_clipped_and_degenerate_ones_dropped(tmp_path: Path) -> None:
    pair = one_image_set(
        tmp_path,
        [obj("a", -5, 20, 10, 30), obj("b", 90, 130, 0, 60), obj("c", 110, 140, 0, 10), obj("d", 5, 5, 0, 10)],
    )
    records, report = load_pair(pair, DatasetOptions())
    assert report.box_units == "pixel"
    assert records.boxes.tolist() == [[0, 10, 20, 30], [90, 0, 100, 50]]
    assert [records.classes[i] for i in records.class_ids] == ["a", "b"]
    assert report.dropped_objects == {"degenerate_box": 2}
    assert report.clipped_objects == 2


def test_relative_boxes_become_pixels(tmp_path: Path) -> None:
    pair = one_image_set(tmp_path, [obj("a", 0.1, 0.5, 0.2, 1.0)])
    records, report = load_pair(pair, DatasetOptions())
    assert report.box_units == "relative" and "auto -> relative" in report.box_units_reason
    assert records.boxes.tolist() == [[10, 10, 50, 50]]


def test_normalised_corners_a_hair_past_1_are_relative_and_clipped(tmp_path: Path) -> None:
    pair = one_image_set(tmp_path, [obj("a", 0.1, 0.5, 0.2, 1.0004), obj("b", 0.6, 0.9, 0.1, 0.5)])
    records, report = load_pair(pair, DatasetOptions())
    assert report.box_units == "relative" and "1 objects reach past 1 and are clipped" in report.box_units_reason
    assert records.boxes.tolist() == [[10, 10, 50, 50], [60, 5, 90, 25]] and report.clipped_objects == 1


def test_a_pixel_guess_with_boxes_under_2_px_is_refused(tmp_path: Path) -> None:
    objects = [obj("a", 0.1, 0.5, 0.2, 0.9), obj("b", 0.6, 0.9, 0.1, 0.5), obj("c", 0.2, 1.3, 0.1, 0.5)]
    with pytest.raises(DatasetError, match=r"median box would be 0\.4 x 0\.4 pixels: the coordinates look normalised"):
        load_pair(one_image_set(tmp_path, objects), DatasetOptions())
    records, _ = load_pair(one_image_set(tmp_path, objects), DatasetOptions(box_units="relative"))
    assert len(records.boxes) == 3


def test_box_units_can_be_forced(tmp_path: Path) -> None:
    pair = one_image_set(tmp_path, [obj("a", 0, 1, 0, 1)])
    records, report = load_pair(pair, DatasetOptions(box_units="pixel"))
    assert records.boxes.tolist() == [[0, 0, 1, 1]] and report.box_units_reason == "pixel (as requested)"


def test_min_confidence_drops_and_counts(tmp_path: Path) -> None:
    pair = one_image_set(tmp_path, [obj("a", 0, 10, 0, 10), obj("b", 0, 10, 0, 10)], confidences=[0.2, 0.9])
    records, report = load_pair(pair, DatasetOptions(min_confidence=0.5))
    assert [records.classes[i] for i in records.class_ids] == ["b"]
    assert records.confidences.tolist() == pytest.approx([0.9])
    assert report.dropped_objects == {"low_confidence": 1}


def test_datastore_layout(tmp_path: Path) -> None:
    pair = one_image_set(tmp_path, [obj("a", 0, 10, 0, 10)], datastore="main_datastore")
    records, _ = load_pair(pair, DatasetOptions(datastore_name="main_datastore"))
    assert records.paths.tolist() == [str(tmp_path / "imgs" / "main_datastore" / "x.jpg")]
    with pytest.raises(DatasetError, match=r"has no folder 'other'.*folders there: main_datastore"):
        load_pair(pair, DatasetOptions(datastore_name="other"))
    _, studio = load_pair(pair, DatasetOptions(datastore_name=""))  # said explicitly: the ML-studio layout
    assert studio.images_missing == 1 and "folders there: main_datastore" in studio.hint


@pytest.mark.parametrize("datastore", ["", "main_datastore", "ds2"], ids=["root", "main_datastore", "other-name"])
def test_datastore_folder_is_detected_when_not_given(tmp_path: Path, datastore: str) -> None:
    pair = one_image_set(tmp_path, [obj("a", 0, 10, 0, 10)], datastore=datastore)
    (tmp_path / "imgs" / "unrelated").mkdir()
    records, report = load_pair(pair, DatasetOptions())
    assert records.paths.tolist() == [str(tmp_path / "imgs" / datastore / "x.jpg").replace("//", "/")]
    expected = f"under datastore folder {datastore!r}" if datastore else "at the mount root (ML-studio layout)"
    assert report.datastore_reason == f"DATASTORE_NAME not set: image paths found {expected}"


def test_datastore_detection_ambiguous_is_an_error_nowhere_falls_back_to_root(tmp_path: Path) -> None:
    pair = one_image_set(tmp_path, [obj("a", 0, 10, 0, 10)], datastore="a")
    make_image(tmp_path / "imgs" / "b" / "x.jpg")
    with pytest.raises(DatasetError, match=r"exist in more than one place .*imgs/a, .*imgs/b\); set DATASTORE_NAME"):
        load_pair(pair, DatasetOptions())
    assert len(load_pair(pair, DatasetOptions(datastore_name="b"))[0]) == 1  # naming one resolves it
    for folder in ("a", "b"):
        (tmp_path / "imgs" / folder / "x.jpg").unlink()
    _, report = load_pair(pair, DatasetOptions())  # found nowhere: the root, and each row says what is missing
    assert report.images_missing == 1 and "found anywhere: using the mount root" in report.datastore_reason


def test_bad_rows_error_or_skip(tmp_path: Path, small_set: SmallSet) -> None:
    labels = write_labels(
        tmp_path / "bad.csv",
        [
            {"image_url": "set/a.jpg", "label": [obj("cat", 1, 30, 2, 40)]},
            {"image_url": "set/missing.jpg", "label": [obj("cat", 1, 2, 3, 4)]},
            {"image_url": "../escape.jpg", "label": []},
            {"image_url": "set/a.jpg", "label": []},
            {"image_url": "set/b.jpg", "label": "[{'type': 'x'}]"},
        ],
    )
    config = DataConfig(DatasetPair(small_set.imageset, labels))
    dataset = load_dataset(config)
    report = dataset.reports[0]
    assert report.problems == {"image_missing": 1, "image_url_unsafe": 1, "duplicate_image": 1, "label_box": 1}
    assert report.first_problem.startswith(f"{labels} row 2, field 'image_url': image ")
    assert "is also on " + f"{labels} row 1" in report.problem_examples[2]
    assert len(dataset.train) == 1  # only the good row
    with pytest.raises(DatasetError, match=r"row 2, field 'image_url'.*pass --on-bad-row skip"):
        load_dataset_strict(config)
    skipped = load_dataset_strict(replace(config, options=DatasetOptions(on_bad_row="skip")))
    assert skipped.train.image_urls.tolist() == ["set/a.jpg"]


def test_nothing_usable_is_an_error_even_when_skipping(tmp_path: Path, small_set: SmallSet) -> None:
    labels = write_labels(tmp_path / "l.csv", [{"image_url": "set/c.png", "label": []}])
    with pytest.raises(DatasetError, match="no objects left"):
        load_dataset_strict(
            DataConfig(DatasetPair(small_set.imageset, labels), options=DatasetOptions(on_bad_row="skip"))
        )


def test_imageset_must_be_a_folder(tmp_path: Path, small_set: SmallSet) -> None:
    with pytest.raises(DatasetError, match="is not a folder"):
        load_pair(DatasetPair(tmp_path / "nope", small_set.labels), DatasetOptions())


def test_class_map_is_sorted_union_and_ids_follow_it(tmp_path: Path, small_set: SmallSet) -> None:
    val_labels = write_labels(tmp_path / "val.csv", [{"image_url": "set/c.png", "label": [obj("ant", 0, 5, 0, 5)]}])
    dataset = load_dataset(
        DataConfig(DatasetPair(small_set.imageset, small_set.labels), DatasetPair(small_set.imageset, val_labels))
    )
    assert dataset.class_map.names == ("ant", "cat", "dog")
    train = dataset.train
    assert [dataset.class_map.names[i] for i in train.class_ids] == ["cat", "dog", "cat"]
    assert [dataset.class_map.names[i] for i in dataset.val.class_ids] == ["ant"]


def test_class_map_round_trip(tmp_path: Path) -> None:
    cmap = ClassMap.from_names(["b", "a", "b"])
    assert cmap.names == ("a", "b")
    assert ClassMap.load(cmap.save(tmp_path / "class_map.json")) == cmap
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="not a trainkit class map"):
        ClassMap.load(tmp_path / "bad.json")


def test_records_access_and_subset(small_set: SmallSet) -> None:
    records, _ = load_pair(DatasetPair(small_set.imageset, small_set.labels), DatasetOptions())
    second = records[1]
    assert second.image_url == "set/b.jpg" and (second.width, second.height) == (64, 48)
    assert second.boxes.tolist() == [[10, 10, 20, 20], [0, 0, 5, 5]]
    sub = records.subset(np.array([2, 1]))
    assert sub.image_urls.tolist() == ["set/c.png", "set/b.jpg"]
    assert sub[1].boxes.tolist() == second.boxes.tolist()
    assert sub.offsets.tolist() == [0, 0, 2]


def test_split_is_seeded_disjoint_and_complete(tmp_path: Path) -> None:
    for i in range(20):
        make_image(tmp_path / "imgs" / f"{i}.jpg", (16, 16))
    labels = write_labels(
        tmp_path / "l.csv", [{"image_url": f"{i}.jpg", "label": [obj("a", 0, 5, 0, 5)]} for i in range(20)]
    )
    records, _ = load_pair(DatasetPair(tmp_path / "imgs", labels), DatasetOptions())
    train, val = split_by_image(records, 0.25, seed=3)
    _, again_val = split_by_image(records, 0.25, seed=3)
    _, other_val = split_by_image(records, 0.25, seed=4)
    assert len(val) == 5 and len(train) == 15
    assert set(train.image_urls) | set(val.image_urls) == set(records.image_urls)
    assert not set(train.image_urls) & set(val.image_urls)
    assert val.image_urls.tolist() == again_val.image_urls.tolist()
    assert set(other_val.image_urls) != set(val.image_urls)
    shuffled = records.subset(np.arange(20)[::-1])  # the split follows image names, not row order
    assert set(split_by_image(shuffled, 0.25, seed=3)[1].image_urls) == set(val.image_urls)


def _named(tmp_path: Path, names: list[str]) -> Path:
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    rows = []
    for i, name in enumerate(names):
        Image.new("RGB", (40, 30)).save(folder / f"{i}.png")
        rows.append(
            {"image_url": f"{i}.png", "label": [{"type": name, "bottomX": 1, "topX": 20, "bottomY": 1, "topY": 20}]}
        )
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "labels.csv"


@pytest.mark.parametrize(
    ("policy", "classes", "problem"),
    [
        (
            "error",
            ("Circle", "circle", "square"),
            "class names that differ only in case: 'circle' (3 objects), 'Circle' (1",
        ),
        ("fold-case", ("circle", "square"), None),
        ("exact", ("Circle", "circle", "square"), None),
    ],
)
def test_class_names_are_stripped_and_case_is_the_users_call(tmp_path: Path, policy, classes, problem) -> None:
    labels = _named(tmp_path, ["circle", " circle", "circle ", "Circle", "square"])
    options = DatasetOptions(datastore_name="", class_names=policy)
    dataset = load_dataset(DataConfig(DatasetPair(tmp_path / "imgs", labels), options=options))
    assert dataset.class_map.names == classes
    reason = dataset.usable("error")
    assert (reason is None) if problem is None else (problem in reason and "--class-names fold-case" in reason)
    if policy == "fold-case":
        assert np.bincount(dataset.train.class_ids).tolist() == [4, 1]


def _fixed(tmp_path: Path, content: object, name: str = "classes.json") -> tuple[str, ...]:
    import json

    (tmp_path / name).write_text(json.dumps(content), encoding="utf-8")
    return ClassMap.read_fixed(tmp_path / name).names


def test_class_map_file_forms(tmp_path: Path) -> None:
    assert _fixed(tmp_path, ["square", " circle"]) == ("square", "circle")
    assert _fixed(tmp_path, {"circle": 1, "square": 0}) == ("square", "circle")
    ClassMap(("b", "a")).save(tmp_path / "run" / "model" / "artifacts" / "class_map.json")
    assert ClassMap.read_fixed(tmp_path / "run").names == ("b", "a")  # an earlier run's output folder
    for content, message in [
        ({"a": 0, "b": 2}, "ids must be the integers 0 to 1"),
        ({"a": 0, "b": True}, "ids must be the integers"),
        (["a", "a "], "'a' listed more than once"),
        (["a", ""], "non-empty strings"),
        ([], "expected a JSON list"),
    ]:
        with pytest.raises(UserError, match=message):
            _fixed(tmp_path, content)
    with pytest.raises(UserError, match=r"holds no class_map\.json"):
        ClassMap.read_fixed(tmp_path)


def test_fixed_class_map_sets_ids_and_order_and_flags_other_classes(tmp_path: Path) -> None:
    labels = _named(tmp_path, ["circle", "square ", "Circle", "triangle"])
    fixed = ("square", "circle", "hexagon")  # not sorted, and one class the data lacks

    def load(policy: str, on_bad_row: str = "error"):
        options = DatasetOptions(datastore_name="", class_names=policy, class_map=fixed, on_bad_row=on_bad_row)
        return load_dataset(DataConfig(DatasetPair(tmp_path / "imgs", labels), options=options))

    dataset = load("error")
    assert dataset.class_map.names == fixed
    reason = dataset.usable("error")
    assert "row 3" in reason and "class 'Circle' is not in the class map" in reason
    assert "--class-names fold-case" in reason
    assert dataset.reports[0].problems == {"class_not_in_map": 2}
    assert (
        "class 'triangle' is not in the class map (3: 'square', 'circle', 'hexagon'); add it"
        in (dataset.reports[0].problem_examples[1])
    )
    skipped = load("error", "skip")
    assert skipped.usable("skip") is None
    assert [skipped.class_map.names[i] for i in skipped.train.class_ids] == ["circle", "square"]
    folded = load("fold-case", "skip")
    assert folded.reports[0].problems == {"class_not_in_map": 1}  # only 'triangle'
    assert np.bincount(folded.train.class_ids, minlength=3).tolist() == [1, 2, 0]


def test_validate_with_a_class_map_names_the_row(run_cli, tmp_path: Path) -> None:
    labels = _named(tmp_path, ["circle", "triangle"])
    (tmp_path / "map.json").write_text('["circle"]', encoding="utf-8")
    data = ("validate", "--imageset", tmp_path / "imgs", "--labelset", labels)
    result = run_cli(*data, "--class-map", tmp_path / "map.json")
    assert result.code == 2
    assert "class 'triangle' is not in the class map" in result.err
    bad = run_cli(*data, "--class-map", tmp_path / "no.json")
    assert bad.code == 2 and "--class-map" in bad.err and "no.json" in bad.err
    assert len(bad.err.strip().splitlines()) == 1
