"""The way of a run reads in short functions: none over 60 lines in the modules a run's
preparation and server go through (tables of data aside)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "fedsim/api.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "fedsim" / "prepare").glob("*.py")),
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "fedsim" / "server").rglob("*.py")),
    "fedsim/privacy/run.py",
    "fedsim/privacy/preflight.py",
    "strategies/strategy.py",
    "strategies/extension.py",
    "strategies/rounds.py",
]
#: functions that are tables of data (one line per field)
TABLES = {"fedsim/server/summary.py:build_summary"}
LIMIT = 60


def test_no_long_function_on_the_way_of_a_run():
    long = []
    for rel in MODULES:
        for node in ast.walk(ast.parse((ROOT / rel).read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > LIMIT and f"{rel}:{node.name}" not in TABLES:
                    long.append(f"{rel}:{node.name} ({n} lines)")
    assert long == []
