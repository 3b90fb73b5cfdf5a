"""No function of fedsim, strategies, attacks or partitioners is longer than
:data:`MAX_LINES` lines: a long function is split into named steps that read as what it
does (issue 28). A function's length runs from its ``def`` line to its last line,
docstring and comments included; a nested function counts in its parent's length and
on its own.

Exempt by rule: a table of data, a function whose body (after its docstring) only
returns a literal (numbers, strings, and lists, tuples, sets and dicts of them).
Exempt by name: :data:`ALLOWED`, which only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fedsim", "strategies", "attacks", "partitioners")
MAX_LINES = 60

#: ``module:qualified name`` of the functions still longer than MAX_LINES; it only shrinks
ALLOWED = frozenset(
    {
        # a table of data: one line per summary.json key
        "fedsim.server.summary:build_summary",
    }
)

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, Function]]:
    """(qualified name, node) of every function under ``node``, methods and nested ones too."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + child.name, child
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def _is_literal(node: ast.AST) -> bool:
    """A constant, or a list, tuple, set or dict of literals (a negative number too)."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k) for k in node.keys) and all(_is_literal(v) for v in node.values)
    return False


def is_data_table(fn: Function) -> bool:
    """Whether ``fn`` only returns a literal (after its docstring): a table of data."""
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return (
        len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None and _is_literal(body[0].value)
    )


def long_functions() -> dict[str, int]:
    """``module:qualified name`` -> lines of every function over MAX_LINES that is not a table of data."""
    out: dict[str, int] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for qualname, fn in _functions(tree):
                lines = fn.end_lineno - fn.lineno + 1
                if lines > MAX_LINES and not is_data_table(fn):
                    out[f"{_module(path)}:{qualname}"] = lines
    return out


def test_the_functions_are_read():
    found = {
        name
        for pkg in PACKAGES
        for path in (ROOT / pkg).rglob("*.py")
        for name, _ in _functions(ast.parse(path.read_text()))
    }
    assert {"sweep", "Recorder.__call__", "_Study.open"} <= found


def test_no_function_is_longer_than_max_lines():
    too_long = {name: n for name, n in long_functions().items() if name not in ALLOWED}
    assert not too_long, f"functions over {MAX_LINES} lines (split each into named steps): " + ", ".join(
        f"{name} ({n} lines)" for name, n in sorted(too_long.items(), key=lambda kv: -kv[1])
    )


def test_the_allow_list_only_names_long_functions():
    """An allowed function that has been split (or renamed) leaves the list: it only shrinks."""
    stale = sorted(set(ALLOWED) - set(long_functions()))
    assert not stale, f"no longer over {MAX_LINES} lines, remove from ALLOWED: {', '.join(stale)}"


def test_a_table_of_data_is_exempt_and_logic_is_not():
    table = ast.parse('def t():\n    """Doc."""\n    return {"a": (1, -2.0), "b": [None, "x"]}\n').body[0]
    logic = ast.parse("def f(x):\n    return {'a': x}\n").body[0]
    assert is_data_table(table) and not is_data_table(logic)
