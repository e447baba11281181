"""Safe parsing of the Python literals the labelling API writes, never with `eval`.

The API dumps a pandas DataFrame whose cells hold lists of dicts, so each cell is the `repr` of a
Python list: single-quoted strings, Python ints and floats, and `nan`/`inf`, which
`ast.literal_eval` rejects. NumPy 2 scalars print as `np.float64(1.5)`, so those calls are
accepted too, and nothing else is.
"""

from __future__ import annotations

import ast
import math

DEFAULT_MAX_CELL_CHARS = 1_000_000
MAX_DEPTH = 8

_NAMES: dict[str, object] = {
    "nan": math.nan,
    "NaN": math.nan,
    "inf": math.inf,
    "None": None,
    "True": True,
    "False": False,
}
_NUMPY_MODULES = frozenset({"np", "numpy"})
_NUMPY_FLOATS = frozenset({"float16", "float32", "float64", "longdouble", "double"})
_NUMPY_INTS = frozenset({f"{p}int{b}" for p in ("", "u") for b in (8, 16, 32, 64)})


class LiteralError(ValueError):
    """A cell that is not an acceptable Python literal; the message says why."""


def parse_literal(text: str, max_chars: int = DEFAULT_MAX_CELL_CHARS) -> object:
    """Parse one cell written by pandas `to_csv` into Python objects, refusing anything but data.

    Raises LiteralError for oversized cells, syntax errors and any expression that is not a
    literal (names other than nan/inf/None/True/False, calls other than NumPy scalars, operators).
    """
    if len(text) > max_chars:
        raise LiteralError(f"cell has {len(text)} characters, over the limit of {max_chars}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise LiteralError(f"not a Python literal ({exc.msg} at character {exc.offset})") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise LiteralError(f"not a Python literal ({type(exc).__name__})") from None
    return _convert(tree.body, 0)


def _convert(node: ast.expr, depth: int) -> object:
    if depth > MAX_DEPTH:
        raise LiteralError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (str, int, float)) or node.value is None:
            return node.value
        raise LiteralError(f"unsupported constant {type(node.value).__name__}")
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_convert(elt, depth + 1) for elt in node.elts]
    if isinstance(node, ast.Dict):
        out: dict[object, object] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                raise LiteralError("dict unpacking (**) is not a literal")
            out[_hashable(_convert(key, depth + 1))] = _convert(value, depth + 1)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _convert(node.operand, depth + 1)
        if isinstance(operand, bool) or not isinstance(operand, (int, float)):
            raise LiteralError("a sign applied to something that is not a number")
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.Name):
        if node.id in _NAMES:
            return _NAMES[node.id]
        raise LiteralError(f"unknown name {node.id!r}")
    if isinstance(node, ast.Call):
        return _numpy_scalar(node, depth)
    raise LiteralError(f"unsupported {type(node).__name__} expression")


def _hashable(key: object) -> object:
    if isinstance(key, list):
        raise LiteralError("a list cannot be a dict key")
    return key


def _numpy_scalar(node: ast.Call, depth: int) -> float | int:
    func = node.func
    if not (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id in _NUMPY_MODULES
        and func.attr in _NUMPY_FLOATS | _NUMPY_INTS
        and len(node.args) == 1
        and not node.keywords
    ):
        raise LiteralError("function calls are not literals (only NumPy scalars such as np.float64(1.5))")
    value = _convert(node.args[0], depth + 1)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LiteralError(f"{func.attr}() of something that is not a number")
    return float(value) if func.attr in _NUMPY_FLOATS else int(value)
