from pathlib import Path

import pandas as pd
import pytest
from conftest import obj, write_labels

from trainkit.data.labels import parse_labels
from trainkit.data.tables import read_labelset
from trainkit.errors import DatasetError

ROWS = [
    {"image_url": "a.jpg", "label": [obj("cat", 1, 2, 3, 4)], "label_confidence": [0.5], "note": "x"},
    {"image_url": "b.jpg", "label": [], "label_confidence": [], "note": "y"},
]


def names(table) -> list[str]:
    parsed = parse_labels(table.label, table.confidence)
    assert parsed.issues == {}
    return parsed.class_names.tolist()


def test_csv_with_pandas_index_and_extra_columns(tmp_path: Path) -> None:
    table = read_labelset(write_labels(tmp_path / "l.csv", ROWS))
    assert table.image_url.to_pylist() == ["a.jpg", "b.jpg"]
    assert table.extra_columns == ("", "note")
    assert names(table) == ["cat"]
    assert table.where(1) == f"{tmp_path / 'l.csv'} row 2"


def test_csv_with_utf8_bom_and_newline_in_a_cell(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    rows = [{**ROWS[0], "label": [obj("two\nlines", 1, 2, 3, 4)]}, ROWS[1]]
    pd.DataFrame(rows).to_csv(path, index=False, encoding="utf-8-sig")
    table = read_labelset(path)
    assert names(table) == ["two\nlines"]
    assert table.row_number.tolist() == [1, 2]


def test_parquet_with_text_cells(tmp_path: Path) -> None:
    path = tmp_path / "l.parquet"
    pd.DataFrame(
        [{**r, "label": str(r["label"]), "label_confidence": str(r["label_confidence"])} for r in ROWS]
    ).to_parquet(path)
    assert names(read_labelset(path)) == ["cat"]


def test_parquet_with_native_lists(tmp_path: Path) -> None:
    path = tmp_path / "l.parquet"
    pd.DataFrame(ROWS).to_parquet(path)
    assert names(read_labelset(path)) == ["cat"]


def test_folder_of_files_numbers_rows_per_file(tmp_path: Path) -> None:
    write_labels(tmp_path / "set" / "part-0.csv", ROWS)
    write_labels(tmp_path / "set" / "sub" / "part-1.csv", [{**ROWS[0], "image_url": "c.jpg"}])
    (tmp_path / "set" / "_SUCCESS").write_text("")
    table = read_labelset(tmp_path / "set")
    assert table.image_url.to_pylist() == ["a.jpg", "b.jpg", "c.jpg"]
    assert table.where(2) == f"{tmp_path / 'set' / 'sub' / 'part-1.csv'} row 1"


def test_confidence_column_may_be_missing_in_some_files(tmp_path: Path) -> None:
    write_labels(tmp_path / "set" / "a.csv", ROWS)
    write_labels(tmp_path / "set" / "b.csv", [{"image_url": "c.jpg", "label": [obj("dog", 1, 2, 3, 4)]}])
    parsed = parse_labels(read_labelset(tmp_path / "set").label, read_labelset(tmp_path / "set").confidence)
    assert parsed.confidences.tolist() == [0.5, 1.0]


@pytest.mark.parametrize(
    ("mltable", "files"),
    [
        ("paths:\n  - file: ./data/l.csv\ntransformations:\n  - read_delimited:\n      delimiter: ','\n", ["l.csv"]),
        ("paths:\n  - folder: data\n", ["l.csv"]),
        (
            'paths:\n  - pattern: ./data/*.tsv\ntransformations:\n  - read_delimited:\n      delimiter: "\\t"\n'
            "      header: all_files_same_headers\n      encoding: utf8\n  - take: 10\n",
            ["l.tsv"],
        ),
        (
            "paths:\n  - file: ./data/l.parquet\n"
            "transformations:\n  - read_parquet:\n      include_path_column: false\n",
            ["l.parquet"],
        ),
    ],
)
def test_mltable(tmp_path: Path, mltable: str, files: list[str]) -> None:
    folder = tmp_path / "labels"
    (folder / "data").mkdir(parents=True)
    frame = pd.DataFrame(ROWS)
    if files[0].endswith(".csv"):
        frame.to_csv(folder / "data" / files[0])
    elif files[0].endswith(".tsv"):
        frame.to_csv(folder / "data" / files[0], sep="\t")
    else:
        frame.to_parquet(folder / "data" / files[0])
    (folder / "MLTable").write_text(mltable)
    table = read_labelset(folder)
    assert [Path(f).name for f in table.files] == files
    assert names(table) == ["cat"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "nope.csv", "does not exist"),
        (lambda p: _file(p / "x.xlsx", b""), "unsupported file type .xlsx"),
        (lambda p: (p / "e").mkdir() or p / "e", "holds no .csv, .tsv or .parquet file"),
        (lambda p: write_labels(p / "l.csv", [{"image_url": "a.jpg", "labels": "[]"}]), "no column 'label'"),
        (lambda p: _file(p / "l.parquet", b"not parquet"), "cannot read"),
        (lambda p: _file(p / "l.csv", b"image_url,label\n\xff\xfe,[]\n"), "cannot read"),
        (lambda p: _file(p / "l.csv", b"image_url,label\na.jpg,[],extra\n"), "cannot read as csv"),
        (lambda p: _mltable(p, "paths: []\n"), "non-empty 'paths'"),
        (lambda p: _mltable(p, "paths:\n  - file: azureml://datastores/x/paths/l.csv\n"), "is remote"),
        (lambda p: _mltable(p, "paths:\n  - file: missing.csv\n"), "does not exist"),
        (
            lambda p: _mltable(p, "paths:\n  - file: l.csv\ntransformations:\n  - read_delta_lake: {}\n"),
            "read_delta_lake is not supported",
        ),
        (
            lambda p: _mltable(
                p, "paths:\n  - file: l.csv\ntransformations:\n  - read_delimited:\n      header: no_header\n"
            ),
            "header 'no_header' is not supported",
        ),
        (lambda p: _mltable(p, "paths: [\n"), "not a readable MLTable"),
    ],
)
def test_bad_label_sets(tmp_path: Path, setup, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        read_labelset(setup(tmp_path))


def _mltable(path: Path, text: str) -> Path:
    folder = path / "mlt"
    folder.mkdir()
    write_labels(folder / "l.csv", ROWS)
    (folder / "MLTable").write_text(text)
    return folder


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_label_cell_over_a_megabyte_is_read(tmp_path: Path) -> None:
    """36,000 objects in one cell (2.5 MB), across more than two of Arrow's 1 MiB CSV blocks."""
    import pandas as pd

    from trainkit.data.labels import parse_labels
    from trainkit.data.tables import read_labelset

    big = [{"type": "dot", "bottomX": i % 90, "topX": i % 90 + 5, "bottomY": 1, "topY": 6} for i in range(36000)]
    rows = [{"image_url": "a.jpg", "label": big}, {"image_url": "b.jpg", "label": big[:3]}]
    pd.DataFrame(rows).to_csv(tmp_path / "big.csv", index=False)
    assert (tmp_path / "big.csv").stat().st_size > 2.2 * (1 << 20)
    table = read_labelset(tmp_path / "big.csv")
    parsed = parse_labels(table.label, None, max_cell_chars=3_000_000)
    assert parsed.counts.tolist() == [36000, 3] and not parsed.issues
