"""The import graph of fedsim, strategies and partitioners: no cycles, and deferred
(function-local) imports only for optional or heavy libraries.

The graph is read from the source (every ``import`` statement, at module level or in
a function); ``from pkg import name`` counts as an import of ``pkg.name`` when that is a
module and of ``pkg`` otherwise. docs/architecture.md draws the intended layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fedsim", "strategies", "partitioners", "attacks")

#: what may be imported inside a function: optional extras and heavy libraries whose
#: import a light code path should not pay (Ray and flwr.simulation ~1 s, matplotlib,
#: rich, torch for the CLI's --help; Flower's Ray backend module imports Ray)
DEFERRABLE = (
    "ray",
    "flwr.simulation",
    "flwr.server.superlink.fleet.vce.backend.raybackend",
    "matplotlib",
    "rich",
    "tensorboard",
    "torch.utils.tensorboard",
    "datasets",
    "flwr_datasets",
    "PIL",
    "opacus",
    "dp_accounting",
    "mlflow",
    "wandb",
    "optuna",
    "torch",
    "torchvision",
    "scipy",
    "yaml",
    "numpy",
    # Parquet tables of device profiles (system.source file): an optional, heavy library
    "pandas",
    "pyarrow",
)
#: fedsim's own modules may be imported in a function only where they are heavy for the
#: importer: the package's lazy attributes (PEP 562) and the CLI, whose commands import
#: their torch- and Flower-heavy modules so that `fedsim --help` stays instant, and the
#: sweep's runner, whose planning, tables and reports need neither
OWN_DEFERRED = {"fedsim", "fedsim.cli", "fedsim.sweeps.execute"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODS = _modules()


def _targets(current: str, node: ast.AST) -> tuple[set[str], set[str]]:
    """(own modules, external module names) an import statement loads."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = current.split(".")
            if MODS[current].name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODS]
        names = subs if len(subs) == len(node.names) else subs + [module]
    own, ext = set(), set()
    for name in names:
        probe = name
        while probe and probe not in MODS:
            probe = probe.rpartition(".")[0]
        (own.add(probe) if probe else ext.add(name))
    return own - {current}, ext


def _graph():
    edges: dict[str, set[str]] = {m: set() for m in MODS}
    deferred: list[tuple[str, str, bool]] = []  # (module, target, own)
    for mod, path in MODS.items():
        tree = ast.parse(path.read_text())
        in_function = {
            id(sub)
            for fn in ast.walk(tree)
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            for sub in ast.walk(fn)
            if isinstance(sub, (ast.Import, ast.ImportFrom))
        }
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                own, ext = _targets(mod, node)
                edges[mod] |= own
                if id(node) in in_function:
                    deferred += [(mod, t, True) for t in own] + [(mod, t, False) for t in ext]
    return edges, deferred


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    edges, _ = _graph()
    assert (
        "fedsim.config.validate" in edges["fedsim.config.load"]
        and "fedsim.schema.sections" in edges["fedsim.models.registry"]
    )


def test_no_import_cycle():
    edges, _ = _graph()
    assert _cycles(edges) == []


def test_deferred_imports_are_only_of_optional_or_heavy_libraries():
    _, deferred = _graph()
    bad = [
        (m, t)
        for m, t, own in deferred
        if (own and m not in OWN_DEFERRED) or (not own and not any(t == d or t.startswith(d + ".") for d in DEFERRABLE))
    ]
    assert bad == [], "import these at module level (or add a heavy/optional library to DEFERRABLE with the reason)"


def test_strategies_partitioners_and_attacks_do_not_import_the_engine_cli_or_run_store():
    edges, _ = _graph()
    forbidden = (
        "fedsim.engine",
        "fedsim.cli",
        "fedsim.rundir.store",
        "fedsim.api",
        "fedsim.server.app",
        "fedsim.rundir.ownership",
    )
    for mod, targets in edges.items():
        if mod.startswith(("strategies", "partitioners", "attacks")):
            assert not [t for t in targets if t.startswith(forbidden)], mod


# ------------------------------------------------------------------ packages


def unit(mod: str) -> str:
    """The package a module belongs to: a subpackage of fedsim (``fedsim.server``), a
    module at fedsim's root (``fedsim.cli``), or a top-level package (``strategies``)."""
    parts = mod.split(".")
    if parts[0] != "fedsim":
        return parts[0]
    if len(parts) > 1 and (ROOT / "fedsim" / parts[1]).is_dir():
        return "fedsim." + parts[1]
    return mod


def package_graph() -> dict[str, set[str]]:
    """Which package imports which (any import statement, deferred ones included)."""
    edges, _ = _graph()
    graph: dict[str, set[str]] = {}
    for mod, targets in edges.items():
        graph.setdefault(unit(mod), set()).update(unit(t) for t in targets if unit(t) != unit(mod))
    return graph


def test_no_loop_between_packages():
    graph = package_graph()
    assert _cycles(graph) == []


def _package_map() -> dict[str, tuple[int, str, set[str]]]:
    """docs/architecture.md's package map: package -> (layer, what it is, imports)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("<!-- package-map")[1].split("<!-- /package-map -->")[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].isdigit():
            continue
        layer, package, what, imports = cells
        names = {n.strip().strip("`") for n in imports.split(",") if n.strip()}
        rows[package.strip("`")] = (int(layer), what, names)
    return rows


def test_the_architecture_docs_package_map_is_the_code():
    doc, code = _package_map(), package_graph()
    assert sorted(doc) == sorted(code), "docs/architecture.md's package map names other packages than the code"
    wrong = {p: {"doc": sorted(doc[p][2]), "code": sorted(code[p])} for p in code if doc[p][2] != code[p]}
    assert wrong == {}, "docs/architecture.md's import arrows differ from the code"


def test_every_package_imports_only_lower_layers():
    doc = _package_map()
    upward = [(p, t) for p, (layer, _, imports) in doc.items() for t in imports if doc[t][0] >= layer]
    assert upward == []


def test_the_package_map_names_every_module_of_fedsims_subpackages():
    doc = _package_map()
    missing = []
    for package, (_, what, _) in doc.items():
        folder = ROOT / package.replace(".", "/")
        if not package.startswith("fedsim.") or not folder.is_dir():
            continue
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            if rel.name == "__init__":
                continue
            # a module is named (`store`), or its folder is (`callbacks/`: one file per part)
            if f"`{rel.as_posix()}`" not in what and f"`{rel.parts[0]}/`" not in what:
                missing.append(f"{package}.{'.'.join(rel.parts)}")
    assert missing == []
