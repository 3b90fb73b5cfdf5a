"""Flower is used through its public API, its internals only in fedsim/util/flower_compat.py.

Read from the source of every package, benchmark and example (as test_imports.py reads
the import graph): outside flower_compat.py,

- an import from Flower names a public module (``flwr.app``, ``flwr.clientapp``,
  ``flwr.serverapp`` and their ``mod`` and ``strategy``) and only names in its
  ``__all__``; ``flwr.simulation`` (the deprecated ``run_simulation``) and Flower's
  private packages are reached through flower_compat;
- no code reads or writes an undocumented attribute of Flower's strategies
  (``flower_compat.SERVER_STATE_ATTRIBUTES``), as an attribute or a ``getattr`` string;
- no class is built with ``type(name, bases, namespace)``: a ``class`` statement is one
  that grep and IDEs can follow.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from fedsim.util import flower_compat

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("fedsim", "strategies", "attacks", "partitioners", "benchmarks", "examples")
COMPAT = ROOT / "fedsim" / "util" / "flower_compat.py"
PUBLIC = ("flwr", "flwr.app", "flwr.clientapp", "flwr.clientapp.mod", "flwr.serverapp", "flwr.serverapp.strategy")
FLOWER_STATE = frozenset(flower_compat.SERVER_STATE_ATTRIBUTES.values())


def _sources() -> list[Path]:
    return sorted(p for pkg in SCANNED for p in (ROOT / pkg).rglob("*.py") if p != COMPAT)


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


def _flower_imports(path: Path, tree: ast.AST) -> list[str]:
    """Imports of Flower that are not of its public API."""
    bad: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [
                (node.lineno, f"{_where(path, node)} import {a.name}")
                for a in node.names
                if a.name.split(".")[0] == "flwr" and a.name not in PUBLIC
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "flwr":
            if node.module not in PUBLIC:
                bad.append((node.lineno, f"{_where(path, node)} from {node.module}"))
                continue
            public = set(getattr(importlib.import_module(node.module), "__all__", ()))
            bad += [
                (node.lineno, f"{_where(path, node)} from {node.module} import {a.name}")
                for a in node.names
                if a.name not in public and f"{node.module}.{a.name}" not in PUBLIC
            ]
    return [hit for _, hit in sorted(bad)]


def _flower_state(path: Path, tree: ast.AST) -> list[str]:
    """Reads and writes of Flower's undocumented strategy attributes."""
    bad: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in FLOWER_STATE:
            bad.append((node.lineno, node.col_offset, f"{_where(path, node)} .{node.attr}"))
        elif isinstance(node, ast.Constant) and node.value in FLOWER_STATE:
            bad.append((node.lineno, node.col_offset, f"{_where(path, node)} '{node.value}'"))
    return [hit for *_, hit in sorted(bad)]


def _type_built_classes(path: Path, tree: ast.AST) -> list[str]:
    return [
        f"{_where(path, node)} type(...)"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "type"
        and len(node.args) == 3
    ]


@pytest.mark.parametrize(
    "rule,find",
    [
        ("Flower's public API only (else through fedsim/util/flower_compat.py)", _flower_imports),
        ("Flower's strategy state only through fedsim/util/flower_compat.py", _flower_state),
        ("a class statement, not type(name, bases, namespace)", _type_built_classes),
    ],
)
def test_flower_is_used_through_its_public_api_and_flower_compat(rule, find):
    found = [hit for path in _sources() for hit in find(path, ast.parse(path.read_text(), str(path)))]
    assert found == [], f"{rule}: {found}"


def test_the_rules_see_what_they_are_for():
    """Each rule finds its case in code written the old way (so an empty result means something)."""
    old = (
        "from flwr.simulation import run_simulation\n"
        "from flwr.app import Message, Metadata\n"
        "from flwr.serverapp.strategy.multikrum import compute_distances\n"
        "import flwr.supercore\n"
        "x = s.current_arrays\n"
        "s.m_t = None\n"
        "k = ('current_arrays', 'momentum_vector')\n"
        "C = type('C', (object,), {})\n"
    )
    path = ROOT / "fedsim" / "old.py"
    tree = ast.parse(old)
    assert _flower_imports(path, tree) == [
        "fedsim/old.py:1 from flwr.simulation",
        "fedsim/old.py:3 from flwr.serverapp.strategy.multikrum",
        "fedsim/old.py:4 import flwr.supercore",
    ]
    assert _flower_state(path, tree) == [
        "fedsim/old.py:5 .current_arrays",
        "fedsim/old.py:6 .m_t",
        "fedsim/old.py:7 'current_arrays'",
        "fedsim/old.py:7 'momentum_vector'",
    ]
    assert _type_built_classes(path, tree) == ["fedsim/old.py:8 type(...)"]
