"""The dataset checks (trainkit.data.checks), each on a hand-built case."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainkit.data.checks import CheckOptions, check_records, phash
from trainkit.data.demo import write_demo_dataset
from trainkit.data.records import Records

ROOT = Path(__file__).resolve().parents[1]


def url(path: Path) -> str:
    """A test image's image_url: its folder and name."""
    return f"{path.parent.name}/{path.name}"


def records(images: list[tuple[Path, list[tuple[str, tuple[float, float, float, float]]]]]) -> Records:
    """Records of (image file, [(class, xyxy box), ...]) with the classes sorted."""
    classes = tuple(sorted({name for _, objects in images for name, _ in objects}))
    sizes = [Image.open(path).size for path, _ in images]
    counts = [len(objects) for _, objects in images]
    boxes = [box for _, objects in images for _, box in objects]
    return Records(
        paths=np.array([str(path) for path, _ in images], dtype=object),
        image_urls=np.array([url(path) for path, _ in images], dtype=object),
        sizes=np.array(sizes, dtype=np.int32),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        class_ids=np.array([classes.index(n) for _, objects in images for n, _ in objects], dtype=np.int64),
        confidences=np.ones(sum(counts), dtype=np.float32),
        classes=classes,
    )


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """12 demo images (large shapes on flat backgrounds: different pictures whose hashes could agree by chance)."""
    demo = write_demo_dataset(tmp_path_factory.mktemp("checks") / "demo", images=12, seed=5)
    return sorted(demo.imageset_studio.rglob("*.jpg"))


BOX = ("square", (40.0, 40.0, 120.0, 110.0))


def test_an_exact_copy_a_re_encoded_copy_and_a_resized_copy_are_found(shapes, tmp_path: Path) -> None:
    files = shapes
    copies = tmp_path / "copies"
    copies.mkdir()
    shutil.copy(files[0], copies / "same.jpg")
    Image.open(files[1]).save(copies / "reencoded.jpg", quality=55)
    with Image.open(files[2]) as image:
        image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR).save(copies / "half.png")
    extra = [copies / "same.jpg", copies / "reencoded.jpg", copies / "half.png"]
    train = records([(path, [BOX]) for path in [*files, *extra]])
    report = check_records({"train": train}, CheckOptions(rare_objects=0))
    assert [(f.image, f.other) for f in report.of("duplicate")] == [(url(files[0]), url(extra[0]))]
    assert sorted((f.image, f.other) for f in report.of("near_duplicate")) == [
        (url(files[1]), url(extra[1])), (url(files[2]), url(extra[2]))]  # fmt: skip
    assert report.of("leakage") == []


def test_different_pictures_are_not_near_copies(shapes) -> None:
    files = shapes
    report = check_records({"train": records([(path, [BOX]) for path in files])}, CheckOptions())
    assert report.counts()["duplicate"] == 0 and report.counts()["near_duplicate"] == 0


def test_a_validation_image_that_is_a_training_image_is_leakage(shapes, tmp_path: Path) -> None:
    files = shapes
    leaked = tmp_path / "val_copy.jpg"
    Image.open(files[3]).save(leaked, quality=70)
    train = records([(path, [BOX]) for path in files[:6]])
    val = records([(leaked, [BOX]), (files[7], [BOX])])
    report = check_records({"train": train, "val": val}, CheckOptions(rare_objects=0))
    [finding] = report.of("leakage")
    assert finding.split == "train+val" and finding.detail.startswith("near duplicate")
    assert (finding.image, finding.other) == (url(files[3]), url(leaked))
    assert report.counts()["near_duplicate"] == 0


def test_tiny_border_double_labelled_boxes_and_rare_classes(shapes) -> None:
    files = shapes
    width = Image.open(files[0]).size[0]
    train = records(
        [
            (files[0], [("circle", (10, 10, 13, 40)), ("square", (0, 50, 60, 90)), ("circle", (100, 100, 150, 160))]),
            (files[1], [("square", (30, 30, 90, 90)), ("circle", (31, 30, 90, 91)), ("square", (200, 20, width, 60))]),
            *[(path, [("circle", (50, 50, 100, 100))]) for path in files[2:8]],
        ],
    )
    report = check_records({"train": train}, CheckOptions(duplicates=False, rare_objects=5))
    assert [(f.image, f.box) for f in report.of("tiny_box")] == [(train.image_urls[0], (10.0, 10.0, 13.0, 40.0))]
    assert [f.box for f in report.of("border_box")] == [(0.0, 50.0, 60.0, 90.0), (200.0, 20.0, float(width), 60.0)]
    [double] = report.of("double_label")
    assert double.image == train.image_urls[1] and double.detail.startswith("square and circle on one box")
    [rare] = report.of("rare_class")
    assert rare.detail == "square: 3 objects (fewer than 5)"
    assert "duplicate" not in report.counts() and report.counts()["tiny_box"] == 1  # not read: not counted


def test_the_hash_spreads_flat_pictures_apart() -> None:
    """Two flat pictures with a shape in different places: most of their hashes differ (the median splits the bits)."""
    first, second = np.full((32, 32), 128, np.uint8), np.full((32, 32), 128, np.uint8)
    first[4:14, 4:14], second[18:28, 18:28] = 255, 255
    assert int(np.bitwise_count(phash(first) ^ phash(second))) > 16
    assert phash(first) == phash(first.copy())


def test_validate_counts_what_the_checks_find_and_the_json_lists_it(run_cli, tmp_path: Path) -> None:
    demo = write_demo_dataset(tmp_path / "demo", images=20, seed=6)
    files = sorted(demo.imageset_studio.rglob("*.jpg"))
    shutil.copy(files[0], files[0].with_name("copy.jpg"))  # a second row for the same picture
    labels = demo.labels_csv.read_text().splitlines()
    row = next(line for line in labels if files[0].name in line).replace(files[0].name, "copy.jpg")
    demo.labels_csv.write_text("\n".join([*labels, row.replace(row.split(",")[0], "999", 1)]) + "\n")
    out = tmp_path / "validate.json"
    args = ["validate", "--imageset", demo.imageset_studio, "--datastore-name", "", "--labelset", demo.labels_csv,
            "--duplicates", "--json", out]  # fmt: skip
    result = run_cli(*args)
    assert result.code == 0, result.err
    counts = json.loads(out.read_text())["checks"]["counts"]
    assert counts["duplicate"] + counts["leakage"] == 1  # which, depends on where the split puts the copy
    line = next(line for line in result.out.splitlines() if line.startswith("checks "))
    assert line == "checks     " + ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in counts.items())
    # Without --duplicates no image is read, and the summary says the duplicates were not looked for.
    plain = run_cli(*args[:-3])
    assert "duplicates not looked for" in plain.out and "near duplicate" not in plain.out.split("checks")[1]


class _Page(HTMLParser):
    """Every address the page would load or link to."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "srcset", "data") or (tag == "link" and name == "href"):
                self.sources.append(value or "")
            elif name == "href":
                self.links.append(value or "")


def test_the_report_opens_offline_with_every_picture_beside_it(run_cli, tmp_path: Path) -> None:
    demo = write_demo_dataset(tmp_path / "demo", images=24, seed=8)
    report = tmp_path / "report"
    (report / "stale").mkdir(parents=True)  # a report folder is replaced whole
    json_out = tmp_path / "validate.json"
    result = run_cli("validate", "--imageset", demo.imageset_studio, "--datastore-name", "", "--labelset",
                     demo.labels_csv, "--val-fraction", "0.25", "--report", report, "--json", json_out)  # fmt: skip
    assert result.code == 0, result.err
    page = (report / "report.html").read_text()
    parsed = _Page()
    parsed.feed(page)
    assert "<script" not in page and "url(" not in page and parsed.links == []
    figures = {"objects_per_class", "objects_per_image", "box_sizes", "box_centres", "image_sizes"}
    assert {Path(s).stem for s in parsed.sources if s.startswith("figures/")} == figures
    samples = [s for s in parsed.sources if s.startswith("thumbs/sample_")]
    assert len(samples) == 3 * 6  # three classes, six images each
    for source in parsed.sources:  # nothing fetched: every picture is a file beside the page, and opens
        assert not re.match(r"^[a-z]+:|^/", source), source
        with Image.open(report / source) as image:
            image.verify()
    assert not (report / "stale").exists()
    # The page counts what validate counts.
    counts = json.loads(json_out.read_text())["checks"]["counts"]
    for check, n in counts.items():
        assert f"Check: {check.replace('_', ' ')} ({n})" in page


def test_a_report_folder_that_cannot_be_written_is_a_one_line_error_before_the_checks(run_cli, tmp_path) -> None:
    demo = write_demo_dataset(tmp_path / "demo", images=4, seed=8)
    (tmp_path / "a_file").write_text("not a folder")
    for folder, says in ((tmp_path / "a_file", "is a file"), (tmp_path / "a_file" / "report", "cannot write")):
        result = run_cli("validate", "--imageset", demo.imageset_studio, "--datastore-name", "", "--labelset",
                         demo.labels_csv, "--report", folder)  # fmt: skip
        assert result.code == 2 and says in result.err and str(folder) in result.err, result.err
        assert "Traceback" not in result.err and "result" not in result.out  # refused before any check ran
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_a_training_run_writes_the_report_and_logs_it_to_mlflow(run_cli, monkeypatch, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv("TRAINKIT_DATA_REPORT")  # the default: on (the other tests turn it off)
    demo = write_demo_dataset(tmp_path / "demo", images=12, seed=9)
    out = tmp_path / "out"
    result = run_cli("train", "--trainer", ROOT / "trainers" / "skeleton", "--imageset", demo.imageset_studio,
                     "--datastore-name", "", "--labelset", demo.labels_csv, "--output-dir", out, "--device", "cpu",
                     "--val-fraction", "0.25", "--set", "max_steps=2", "--set", "image_size=64",
                     "--set", "batch_size=4", env={"MLFLOW_TRACKING_URI": ""})  # fmt: skip
    assert result.code == 0, result.err
    checks = json.loads((out / "data_report" / "checks.json").read_text())
    assert checks["images"] == {"train": 9, "val": 3}
    assert (out / "data_report" / "report.html").is_file() and not list(out.glob(".data_report*"))
    record = json.loads((out / "run.json").read_text())
    client = MlflowClient(tracking_uri=record["mlflow_tracking_uri"])
    run = client.get_run(record["mlflow_run_id"])
    assert {k: int(v) for k, v in run.data.params.items() if k.startswith("data/checks.")} == {
        f"data/checks.{name}": n for name, n in checks["counts"].items()}  # fmt: skip
    logged = {a.path for a in client.list_artifacts(record["mlflow_run_id"], "data_report")}
    assert {"data_report/report.html", "data_report/checks.json", "data_report/figures"} <= logged


@pytest.mark.browser
def test_a_headless_browser_shows_every_picture_of_the_report_and_fetches_nothing(run_cli, chromium, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    demo = write_demo_dataset(tmp_path / "demo", images=24, seed=8)
    report = tmp_path / "report"
    result = run_cli("validate", "--imageset", demo.imageset_studio, "--datastore-name", "", "--labelset",
                     demo.labels_csv, "--val-fraction", "0.25", "--report", report)  # fmt: skip
    assert result.code == 0, result.err
    inside = report.as_uri() + "/"
    requested: list[str] = []
    refused: list[str] = []

    def only_the_folder(route) -> None:
        if route.request.url.startswith(inside):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])  # CI runs as root
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.route("**/*", only_the_folder)
            page.goto((report / "report.html").as_uri(), wait_until="load")
            shown = page.evaluate("Array.from(document.images, i => [i.getAttribute('src'), i.complete && "
                                  "i.naturalWidth > 0])")  # fmt: skip
        finally:
            browser.close()
    assert refused == [] and all(url.startswith(inside) for url in requested)
    assert shown and all(ok for _, ok in shown), [src for src, ok in shown if not ok]
    # Every picture written beside the page is on it, and the browser loaded each one.
    pictures = {str(p.relative_to(report)) for p in report.rglob("*") if p.is_file() and p.name != "report.html"}
    assert {src for src, _ in shown} == pictures
    assert {url.removeprefix(inside) for url in requested} >= pictures
