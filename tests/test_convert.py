"""`trainkit convert`: CSV <-> AutoML JSON Lines <-> COCO through the image sizes, round-tripping every object."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainkit.data.dataset import DatasetOptions, DatasetPair, load_pair
from trainkit.data.demo import DemoDataset
from trainkit.data.label_sets import read_labels


def objects(labelset: Path, imageset: Path) -> dict[str, list[tuple]]:
    """image_url -> sorted (class, xmin, ymin, xmax, ymax) in pixels, as train reads them."""
    rows = read_labels(labelset)
    parsed = rows.parsed
    out: dict[str, list[tuple]] = {}
    offsets = parsed.offsets
    for r, url in enumerate(rows.table.image_url.to_pylist()):
        width, height = Image.open(imageset / url).size
        scale = np.array([width, height, width, height]) if rows.units == "relative" else np.ones(4)
        boxes = [(parsed.vocab[parsed.class_codes[j]], *np.round(parsed.boxes[j] * scale, 9).tolist())
                 for j in range(offsets[r], offsets[r + 1])]  # fmt: skip
        out[url] = sorted(boxes)
    return out


@pytest.mark.parametrize("via", ["jsonl", "coco"])
def test_csv_round_trips_through_each_format(run_cli, demo: DemoDataset, tmp_path: Path, via: str) -> None:
    suffix = {"jsonl": "jsonl", "coco": "json"}[via]
    middle, back = tmp_path / "mid" / f"labels.{suffix}", tmp_path / "back.csv"
    images = demo.imageset_studio
    there = run_cli("convert", "--labelset", demo.labels_csv, "--imageset", images, "--to", via, "--output", middle)
    assert there.code == 0, there.err
    again = run_cli("convert", "--labelset", middle, "--imageset", images, "--to", "csv", "--output", back)
    assert again.code == 0, again.err
    original = objects(demo.labels_csv, images)
    assert objects(middle, images) == original and objects(back, images) == original
    assert sum(map(len, original.values())) == 27
    # The round trip is still a dataset train reads the same way.
    records, report = load_pair(DatasetPair(images, back), DatasetOptions(datastore_name=""))
    assert not report.problems and records.num_objects == 27


def test_jsonl_comes_with_an_mltable_automl_reads(run_cli, demo: DemoDataset, tmp_path: Path) -> None:
    out = tmp_path / "automl" / "train.jsonl"
    result = run_cli("convert", "--labelset", demo.labels_csv, "--imageset", demo.imageset_studio, "--to", "jsonl",
                     "--output", out)  # fmt: skip
    assert result.code == 0, result.err
    assert result.out.split() == [str(out), str(out.parent / "MLTable")]
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"image_url", "image_details", "label"} and first["image_details"]["width"].endswith("px")
    box = first["label"][0]
    assert 0 <= box["topX"] < box["bottomX"] <= 1 and 0 <= box["topY"] < box["bottomY"] <= 1
    assert "confidence other than 1, which jsonl does not hold" in result.err  # the demo's confidences are < 1
    records, report = load_pair(DatasetPair(demo.imageset_studio, out.parent), DatasetOptions(datastore_name=""))
    assert report.label_format == "jsonl (AutoML for images)" and records.num_objects == 27


def test_a_bad_row_stops_a_conversion_unless_skipped(run_cli, tmp_path: Path) -> None:
    from conftest import make_image, obj, write_labels

    make_image(tmp_path / "imgs" / "a.jpg", (100, 50))
    labels = write_labels(tmp_path / "l.csv", [{"image_url": "a.jpg", "label": [obj("x", 1, 20, 1, 20)]},
                                               {"image_url": "missing.jpg", "label": []}])  # fmt: skip
    args = ["convert", "--labelset", labels, "--imageset", tmp_path / "imgs", "--to", "coco", "--output",
            tmp_path / "c.json"]  # fmt: skip
    stopped = run_cli(*args)
    assert stopped.code == 2 and "missing.jpg does not exist" in stopped.err and not (tmp_path / "c.json").exists()
    skipped = run_cli(*args, "--on-bad-row", "skip")
    assert skipped.code == 0 and "1 bad rows left out" in skipped.err
    assert len(json.loads((tmp_path / "c.json").read_text())["images"]) == 1


def test_csv_round_trips_through_a_yolo_folder(run_cli, demo: DemoDataset, tmp_path: Path) -> None:
    images, out, back = demo.imageset_studio, tmp_path / "yolo", tmp_path / "back.csv"
    there = run_cli("convert", "--labelset", demo.labels_csv, "--imageset", images, "--to", "yolo", "--output", out)
    assert there.code == 0, there.err
    assert (out / "images").resolve() == images.resolve() and (out / "data.yaml").is_file()
    again = run_cli("convert", "--labelset", out, "--imageset", out, "--to", "csv", "--output", back)
    assert again.code == 0, again.err
    original = objects(demo.labels_csv, images)
    returned = {url.removeprefix("images/"): boxes for url, boxes in objects(back, out).items()}
    assert returned == original


def test_yolo_to_yolo_and_coco_to_coco_keep_every_declared_id_and_name(run_cli, tmp_path: Path) -> None:
    import yaml

    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.new("RGB", (100, 80)).save(root / "images" / "a.jpg")
    names = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 4: "airplane"}  # 1 and 3 occur
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images", "names": names}))
    (root / "labels" / "a.txt").write_text("3 0.5 0.5 0.2 0.25\n1 0.3 0.3 0.2 0.25\n")
    out = tmp_path / "yolo"
    result = run_cli("convert", "--labelset", root / "data.yaml", "--imageset", root, "--to", "yolo", "--output", out)
    assert result.code == 0, result.err
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == list(names.values())
    assert sorted(line.split()[0] for line in (out / "labels" / "images" / "a.txt").read_text().splitlines()) == [
        "1",
        "3",
    ]
    assert "declares with no object, kept with their ids: airplane, car, person" in result.err, result.err
    # COCO's own ids (gaps and all) survive COCO -> COCO; YOLO -> COCO numbers the declared list from 1
    coco = tmp_path / "coco.json"
    assert run_cli("convert", "--labelset", root / "data.yaml", "--imageset", root, "--to", "coco", "--output",
                   coco).code == 0  # fmt: skip
    data = json.loads(coco.read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(i + 1, n) for i, n in names.items()]
    ids = {c["name"]: c["id"] for c in data["categories"]}
    data["categories"] = [{"id": 90 - 10 * i, "name": n} for i, n in enumerate(names.values())]  # ids 90, 80, ..
    for annotation in data["annotations"]:
        name = next(n for n, i in ids.items() if i == annotation["category_id"])
        annotation["category_id"] = 90 - 10 * list(names.values()).index(name)
    coco.write_text(json.dumps(data))
    again = tmp_path / "again.json"
    assert run_cli("convert", "--labelset", coco, "--imageset", root, "--to", "coco", "--output", again).code == 0
    back = json.loads(again.read_text())
    assert sorted((c["id"], c["name"]) for c in back["categories"]) == sorted(
        (c["id"], c["name"]) for c in data["categories"]
    )
    assert sorted(a["category_id"] for a in back["annotations"]) == sorted(
        a["category_id"] for a in data["annotations"]
    )
