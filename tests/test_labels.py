import math

import numpy as np
import pyarrow as pa
import pytest

from trainkit.data.labels import _LABEL_CELL, objects_from_cell, parse_labels


def parse(cells, confidences=None, **kw):
    return parse_labels(pa.array(cells, pa.string()), None if confidences is None else pa.array(confidences), **kw)


CANONICAL = "[{'type': 'car', 'bottomX': 10, 'topX': 5, 'bottomY': 1.5, 'topY': 20}]"


def test_canonical_row_normalises_box_order() -> None:
    parsed = parse([CANONICAL], ["[0.5]"])
    assert parsed.issues == {}
    assert parsed.counts.tolist() == [1]
    assert parsed.class_names.tolist() == ["car"]
    assert parsed.boxes.tolist() == [[5.0, 1.5, 10.0, 20.0]]
    assert parsed.confidences.tolist() == [0.5]


@pytest.mark.parametrize(
    "cell",
    [
        # other key order, extra keys, the 'label' key, both keys agreeing, double-quoted names,
        # escapes, numpy scalars, odd spacing: all must give the same objects as the canonical form.
        "[{'topY': 20, 'bottomY': 1.5, 'topX': 5, 'bottomX': 10, 'type': 'car', 'id': 7}]",
        "[{'label': 'car', 'bottomX': 10, 'topX': 5, 'bottomY': 1.5, 'topY': 20}]",
        "[{'type': 'car', 'label': 'car', 'bottomX': 10, 'topX': 5, 'bottomY': 1.5, 'topY': 20}]",
        '[{"type": "car", "bottomX": 10, "topX": 5, "bottomY": 1.5, "topY": 20}]',
        "[{'type': 'car', 'bottomX': np.float64(10.0), 'topX': 5, 'bottomY': 1.5, 'topY': 20}]",
        "[ { 'type' : 'car' , 'bottomX' : 10 , 'topX' : 5 , 'bottomY' : 1.5 , 'topY' : 20 } ]",
        "[{'type': 'car', 'bottomX': 1, 'topX': 5, 'bottomY': 1.5, 'topY': 20, 'bottomX': 10}]",
    ],
)
def test_variants_parse_like_the_canonical_form(cell: str) -> None:
    parsed = parse([cell])
    assert parsed.issues == {}
    assert parsed.class_names.tolist() == ["car"]
    assert parsed.boxes.tolist() == [[5.0, 1.5, 10.0, 20.0]]


def test_fast_path_takes_only_plain_cells() -> None:
    column = pa.array([CANONICAL, CANONICAL.replace("car", "it\\'s"), CANONICAL.replace("car", "a}b")])
    matched = pa.compute.match_substring_regex(column, _LABEL_CELL).to_pylist()
    assert matched == [True, False, False]


def test_names_with_quotes_and_escapes() -> None:
    cells = [
        "[{'type': \"driver's seat\", 'bottomX': 1, 'topX': 2, 'bottomY': 3, 'topY': 4}]",
        "[{'type': 'say \"hi\"', 'bottomX': 1, 'topX': 2, 'bottomY': 3, 'topY': 4}]",
        "[{'type': 'a\\'b\\\\c\\n', 'bottomX': 1, 'topX': 2, 'bottomY': 3, 'topY': 4}]",
    ]
    assert parse(cells).class_names.tolist() == ["driver's seat", 'say "hi"', "a'b\\c\n"]


def test_empty_list_is_an_image_without_objects() -> None:
    parsed = parse(["[]", CANONICAL], ["[]", "[1.0]"])
    assert parsed.counts.tolist() == [0, 1] and parsed.issues == {}


def test_confidence_column_optional_and_cells_may_be_empty() -> None:
    assert parse([CANONICAL]).confidences.tolist() == [1.0]
    assert parse([CANONICAL], [None]).confidences.tolist() == [1.0]
    assert parse([CANONICAL], [""]).confidences.tolist() == [1.0]


def test_native_list_columns_from_parquet() -> None:
    label = pa.array([[{"type": "car", "bottomX": 10.0, "topX": 5.0, "bottomY": 1.5, "topY": 20.0}], []])
    confidence = pa.array([[0.25], []], pa.list_(pa.float64()))
    parsed = parse_labels(label, confidence)
    assert parsed.issues == {}
    assert parsed.counts.tolist() == [1, 0]
    assert parsed.boxes.tolist() == [[5.0, 1.5, 10.0, 20.0]]
    assert parsed.confidences.tolist() == [0.25]


@pytest.mark.parametrize(
    ("cell", "confidence", "reason", "field", "detail"),
    [
        (None, None, "label_missing", "label", "label is empty; write [] for an image with no objects"),
        ("  ", None, "label_missing", "label", "label is empty"),
        ("[{'type': 'a'", None, "label_syntax", "label", "not a Python literal"),
        ("{'type': 'a'}", None, "label_structure", "label", "label is a dict, expected a list of objects"),
        ("[1]", None, "label_structure", "label", "object 1 is a int, expected a dict"),
        (
            "[{'bottomX': 1, 'topX': 2, 'bottomY': 3, 'topY': 4}]",
            None,
            "label_class",
            "label",
            "object 1 has neither 'type' nor 'label'",
        ),
        (
            "[{'type': 'a', 'label': 'b', 'bottomX': 1, 'topX': 2, 'bottomY': 3, 'topY': 4}]",
            None,
            "label_class",
            "label",
            "object 1 has 'type' 'a' but 'label' 'b'",
        ),
        (
            "[{'type': '', 'bottomX': 1, 'topX': 2, 'bottomY': 3, 'topY': 4}]",
            None,
            "label_class",
            "label",
            "class name '' is not a non-empty string",
        ),
        (
            "[{'type': 3, 'bottomX': 1, 'topX': 2, 'bottomY': 3, 'topY': 4}]",
            None,
            "label_class",
            "label",
            "class name 3 is not",
        ),
        (
            "[{'type': 'a', 'bottomX': 1, 'bottomY': 3, 'topY': 4}]",
            None,
            "label_box",
            "label",
            "object 1 has no 'topX'",
        ),
        (
            "[{'type': 'a', 'bottomX': '1', 'topX': 2, 'bottomY': 3, 'topY': 4}]",
            None,
            "label_box",
            "label",
            "object 1 'bottomX' is '1', expected a number",
        ),
        (
            "[{'type': 'a', 'bottomX': nan, 'topX': 2, 'bottomY': 3, 'topY': 4}]",
            None,
            "label_box",
            "label",
            "object 1 'bottomX' is nan, expected a finite number",
        ),
        (
            "[{'type': 'a', 'bottomX': 1, 'topX': inf, 'bottomY': 3, 'topY': 4}]",
            None,
            "label_box",
            "label",
            "'topX' is inf",
        ),
        (
            "[{'type': 'a', 'bottomX': True, 'topX': 2, 'bottomY': 3, 'topY': 4}]",
            None,
            "label_box",
            "label",
            "'bottomX' is True",
        ),
        (
            CANONICAL,
            "[0.5, 0.5]",
            "confidence_mismatch",
            "label_confidence",
            "label_confidence has 2 values but label has 1 objects",
        ),
        (CANONICAL, "[nan]", "confidence", "label_confidence", "not a finite number"),
        (CANONICAL, "['high']", "confidence", "label_confidence", "expected a list of numbers"),
        (CANONICAL, "[0.5", "label_confidence_syntax", "label_confidence", "not a Python literal"),
    ],
)
def test_row_issues(cell, confidence, reason, field, detail) -> None:
    parsed = parse([CANONICAL, cell], [None, confidence])
    assert parsed.counts.tolist() == [1, 0]  # the bad row holds no objects, the good one is intact
    issue = parsed.issues[1]
    assert (issue.reason, issue.field) == (reason, field)
    assert detail in issue.detail


def test_cell_size_limit() -> None:
    parsed = parse([CANONICAL, CANONICAL], max_cell_chars=len(CANONICAL) - 1)
    assert parsed.issues[0].reason == "label_too_large"
    assert "over the limit" in parsed.issues[0].detail


def test_objects_from_cell_accepts_parsed_values() -> None:
    assert objects_from_cell([{"label": "x", "bottomX": 2, "topX": 1, "bottomY": 0, "topY": 1}]) == [
        ("x", 2.0, 1.0, 0.0, 1.0)
    ]


def test_many_rows_keep_row_order_across_both_paths() -> None:
    rng = np.random.default_rng(0)
    cells, expected = [], []
    for i in range(300):
        name = "it's" if i % 7 == 0 else f"c{i % 4}"
        x0, x1 = sorted(rng.integers(0, 100, 2).tolist())
        objs = [{"type": name, "bottomX": x0, "topX": x1, "bottomY": i, "topY": i + 1}] * (i % 3)
        cells.append(str(objs))
        expected += [(name, x0, i, x1, i + 1)] * (i % 3)
    parsed = parse(cells)
    got = [(n, *b) for n, b in zip(parsed.class_names.tolist(), parsed.boxes.tolist(), strict=True)]
    assert got == expected
    assert all(not math.isnan(c) for c in parsed.confidences)
