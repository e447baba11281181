import math

import pytest

from trainkit.data.literal import LiteralError, parse_literal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[]", []),
        ("[{'type': 'a', 'bottomX': 1, 'topX': -2.5e-3}]", [{"type": "a", "bottomX": 1, "topX": -0.0025}]),
        ('[{"type": "it\'s"}]', [{"type": "it's"}]),
        ("[np.float64(1.5), numpy.int64(3), np.float32(-2)]", [1.5, 3, -2.0]),
        ("(1, 2)", [1, 2]),
        ("[None, True, False]", [None, True, False]),
        ("  [1]\n", [1]),
    ],
)
def test_parses_literals(text: str, expected: object) -> None:
    assert parse_literal(text) == expected


def test_nan_and_inf() -> None:
    value = parse_literal("[nan, inf, -inf, NaN]")
    assert math.isnan(value[0]) and value[1] == math.inf and value[2] == -math.inf and math.isnan(value[3])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('true')", "function calls are not literals"),
        ("open('x')", "function calls are not literals"),
        ("np.array([1])", "function calls are not literals"),
        ("[x]", "unknown name 'x'"),
        ("[1 + 2]", "unsupported BinOp"),
        ("[lambda: 1]", "unsupported Lambda"),
        ("[a.b]", "unsupported Attribute"),
        ("{**x}", "dict unpacking"),
        ("[b'x']", "unsupported constant bytes"),
        ("[-'a']", "sign applied"),
        ("[{'a': 1}", "not a Python literal"),
        ("[" * 20 + "]" * 20, "nested deeper"),
    ],
)
def test_rejects_everything_else(text: str, message: str) -> None:
    with pytest.raises(LiteralError, match=message.replace("(", r"\(").replace("*", r"\*")):
        parse_literal(text)


def test_size_limit() -> None:
    with pytest.raises(LiteralError, match="over the limit of 10"):
        parse_literal("[1, 2, 3, 4, 5]", max_chars=10)
