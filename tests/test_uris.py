"""image_url as AzureML URIs: datastore and path taken apart, mapped into the image set, or refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_image, obj, write_labels

from trainkit.data.dataset import DatasetOptions, DatasetPair, load_pair
from trainkit.data.uris import DatastorePath, NotAnImagePath, datastore_path
from trainkit.errors import DatasetError

SUB = "azureml://subscriptions/0000/resourcegroups/rg/workspaces/ws"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{SUB}/datastores/ds1/paths/UI/img%201.jpg", DatastorePath("ds1", "UI/img 1.jpg")),
        (
            "azureml://subscriptions/0/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
            "/datastores/ds1/paths/a.jpg",
            DatastorePath("ds1", "a.jpg"),
        ),
        ("azureml://datastores/ds1/paths/a/b.jpg", DatastorePath("ds1", "a/b.jpg")),
        ("AmlDatastore://workspaceblobstore/a/b.jpg", DatastorePath("workspaceblobstore", "a/b.jpg")),
        (
            "StreamInfo(AmlDatastore://ds1/x/y.png[{'subscription': '0', 'resourceGroup': 'rg'}])",
            DatastorePath("ds1", "x/y.png"),
        ),
        ("a/b.jpg", None),
    ],
)
def test_uri_forms(url: str, expected: DatastorePath | None) -> None:
    assert datastore_path(url) == expected


def test_web_urls_are_refused_with_what_to_do() -> None:
    with pytest.raises(NotAnImagePath, match="register the images as a data asset"):
        datastore_path("https://example.com/a.jpg")


def _set(tmp_path: Path, urls: list[str], folder: str = "ds1/UI") -> DatasetPair:
    for name in ("a.jpg", "b.jpg"):
        make_image(tmp_path / "mount" / folder / name, (64, 48))
    rows = [{"image_url": url, "label": [obj("x", 1, 20, 1, 20)]} for url in urls]
    return DatasetPair(tmp_path / "mount", write_labels(tmp_path / "labels.csv", rows))


def test_uris_map_under_their_datastore_folder_and_the_summary_says_how(tmp_path: Path) -> None:
    pair = _set(tmp_path, [f"{SUB}/datastores/ds1/paths/UI/a.jpg", "azureml://datastores/ds1/paths/UI/b.jpg"])
    records, report = load_pair(pair, DatasetOptions())
    assert not report.problems and len(records) == 2
    assert report.image_root == str(tmp_path / "mount" / "ds1")
    assert report.image_urls == f"{SUB}/datastores/ds1/paths/UI/a.jpg -> {tmp_path / 'mount' / 'ds1' / 'UI' / 'a.jpg'}"


def test_a_prefix_is_dropped_when_the_image_set_was_mounted_below_it(tmp_path: Path) -> None:
    pair = _set(tmp_path, ["azureml://datastores/ds1/paths/UI/a.jpg", "AmlDatastore://ds1/UI/b.jpg",
                           "azureml://datastores/ds1/paths/other/c.jpg"], folder="")  # fmt: skip
    records, report = load_pair(pair, DatasetOptions(datastore_name="", image_url_prefix="UI", on_bad_row="skip"))
    assert len(records) == 2 and report.problems == {"image_url_prefix": 1}
    assert "is not under --image-url-prefix 'UI'" in report.problem_examples[0]


def test_rows_on_two_datastores_are_an_error_naming_both(tmp_path: Path) -> None:
    pair = _set(tmp_path, ["azureml://datastores/ds1/paths/UI/a.jpg", "AmlDatastore://ds2/UI/b.jpg"])
    with pytest.raises(DatasetError, match=r"row 1: 'ds1', .*row 2: 'ds2'\); split it into one label set per"):
        load_pair(pair, DatasetOptions())


def test_validate_names_the_mapping(run_cli, tmp_path: Path) -> None:
    pair = _set(tmp_path, ["azureml://datastores/ds1/paths/UI/a.jpg", "https://example.com/b.jpg"])
    result = run_cli("validate", "--imageset", pair.imageset, "--labelset", pair.labelset, "--val-fraction", 0)
    assert result.code == 2
    assert f"image_url  azureml://datastores/ds1/paths/UI/a.jpg -> {tmp_path / 'mount' / 'ds1' / 'UI' / 'a.jpg'}" in (
        result.out
    )
    assert "is a web URL, which a job cannot read as a file; register the images" in result.out
