"""Property test: the parser agrees with `ast.literal_eval` on every label string pandas can write."""

import ast
import math

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from trainkit.data.labels import parse_labels

names = st.one_of(
    st.sampled_from(["car", "person", "traffic light", "it's", 'say "hi"', "a'b\"c", "x}, {y", "back\\slash"]),
    st.text(min_size=1, max_size=12),
)
numbers = st.one_of(
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-3, max_value=1e-3),
    st.sampled_from([1e-05, 2.5e16, -0.0, 123456789.125]),
)


@st.composite
def label_objects(draw: st.DrawFn) -> dict:
    key = draw(st.sampled_from(["type", "label"]))
    coords = {k: draw(numbers) for k in ("bottomX", "topX", "bottomY", "topY")}
    obj = {key: draw(names), **coords}
    if draw(st.booleans()):
        obj["score"] = draw(st.one_of(numbers, names, st.none()))
    if draw(st.booleans()):  # key order must not matter
        obj = dict(reversed(list(obj.items())))
    return obj


rows = st.lists(st.lists(label_objects(), max_size=4), min_size=1, max_size=8)


def expected_records(cell: str) -> list[tuple]:
    out = []
    for obj in ast.literal_eval(cell):
        name = obj.get("type", obj.get("label"))
        bx, tx, by, ty = (float(obj[k]) for k in ("bottomX", "topX", "bottomY", "topY"))
        out.append((name, min(bx, tx), min(by, ty), max(bx, tx), max(by, ty)))
    return out


@settings(max_examples=300, deadline=None)
@given(rows)
def test_matches_literal_eval(objects_per_row: list[list[dict]]) -> None:
    cells = [str(objs) for objs in objects_per_row]  # exactly what DataFrame.to_csv writes for a list cell
    parsed = parse_labels(pa.array(cells))
    assert parsed.issues == {}
    expected = [record for cell in cells for record in expected_records(cell)]
    got = [(n, *b) for n, b in zip(parsed.class_names.tolist(), parsed.boxes.tolist(), strict=True)]
    assert got == expected
    assert parsed.counts.tolist() == [len(ast.literal_eval(c)) for c in cells]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.one_of(numbers, st.just(math.nan)), max_size=4), min_size=1, max_size=6))
def test_confidences_match_literal_eval_or_flag_nan(confidences: list[list[float]]) -> None:
    cells = [str([{"type": "a", "bottomX": 0, "topX": 1, "bottomY": 0, "topY": 1}] * len(c)) for c in confidences]
    parsed = parse_labels(pa.array(cells), pa.array([str(c) for c in confidences]))
    for row, values in enumerate(confidences):
        if any(math.isnan(v) for v in values):
            assert parsed.issues[row].field == "label_confidence"
        else:
            assert row not in parsed.issues
            start = int(parsed.offsets[row])
            got = parsed.confidences[start : start + len(values)].tolist()
            assert got == [float(v) for v in ast.literal_eval(str(values))]


@settings(max_examples=100, deadline=None)
@given(st.lists(label_objects(), min_size=1, max_size=3), st.integers(0, 3), st.sampled_from(["nan", "inf", "-inf"]))
def test_non_finite_coordinates_are_row_issues(objects: list[dict], which: int, bad: str) -> None:
    key = ("bottomX", "topX", "bottomY", "topY")[which]
    objects[-1][key] = float(bad)
    cell = str(objects)  # pandas writes float('nan') as nan, which literal_eval cannot read
    parsed = parse_labels(pa.array([cell]))
    assert parsed.issues[0].reason == "label_box"
    assert "expected a finite number" in parsed.issues[0].detail
