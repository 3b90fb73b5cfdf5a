"""A sweep file and its plan: parsing, the grid's factors, and one validated config per run.

A sweep file (YAML, safe-loaded with OmegaConf) holds::

    name: quick                         # optional; default: the file's stem
    base: ../quickstart.yaml            # experiment YAML, relative to the sweep file
    overrides: [federation.rounds=5]    # key=value applied to every run
    grid:                               # the runs are the product of these factors
      strategy.name: [fedavg, fedprox, scaffold]
      partition:                        # a section: each value is a compound setting
        - {label: iid, scheme: iid}
        - {label: "Dir(0.5)", scheme: dirichlet, beta: 0.5}
    seeds: [0, 1]
    tune: [train.lr]                    # optional: factors that are hyperparameters

Precedence: base < ``overrides`` < the grid values < ``seed``. Every planned config is
built and validated (:func:`fedsim.config.load.load_config`) before anything runs; a run's
directory name comes from its settings (``strategy=fedprox__partition=Dir(0.5)__seed=1``).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedsim.config.load import all_keys, load_config
from fedsim.errors import ConfigError
from fedsim.schema.experiment import ExperimentConfig
from fedsim.schema.identity import config_hash, to_dict
from fedsim.util.yaml_file import load_yaml_mapping

SWEEP_KEYS = ("name", "base", "overrides", "grid", "seeds", "tune")
SECTIONS = (
    "data",
    "partition",
    "model",
    "train",
    "strategy",
    "attack",
    "defence",
    "federation",
    "engine",
    "eval",
    "output",
    "privacy",
    "system",
    "comm",
    "selection",
    "asynchronous",
)
#: grid keys whose values are strategies (the tables' columns, the figures' lines)
STRATEGY_FACTORS = ("strategy.name", "strategy")


# ---------------------------------------------------------------- the sweep file


@dataclass(frozen=True)
class Setting:
    """One value of a grid factor: its label and the dotted keys it sets."""

    label: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Factor:
    """One grid entry: a dotted key (``train.lr``) or a section of compound settings."""

    key: str
    short: str
    settings: tuple[Setting, ...]

    @property
    def labels(self) -> list[str]:
        """The settings' labels, in grid order."""
        return [s.label for s in self.settings]


@dataclass
class SweepSpec:
    """A parsed sweep file: the base config tree, overrides, factors, seeds and tune keys."""

    name: str
    base: dict
    overrides: list[str]
    factors: list[Factor]
    seeds: list[int] | None
    tune: list[str]
    source: str | None = None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "-".join(_format_value(x) for x in v)
    if v is None:
        return "none"
    return str(v)


def default_label(values: Mapping[str, Any]) -> str:
    """A compound setting's label from its values: ``{scheme: dirichlet, beta: 0.5}`` -> ``dirichlet-beta0.5``."""
    parts = []
    for k, v in values.items():
        leaf = k.rsplit(".", 1)[-1]
        parts.append(_format_value(v) if leaf in ("scheme", "name") else f"{leaf}{_format_value(v)}")
    return "-".join(parts)


_UNSAFE = re.compile(r"[^A-Za-z0-9._=()+,-]")


def safe_name(text: str, limit: int = 200) -> str:
    """A file-system-safe version of a label: ``#`` -> ``n``, other odd characters -> ``_``."""
    s = _UNSAFE.sub("_", str(text).replace("#", "n")).lstrip(".") or "_"
    if len(s) > limit:
        s = s[: limit - 9] + "_" + hashlib.sha256(s.encode()).hexdigest()[:8]
    return s


def _leaf_keys() -> set[str]:
    return set(all_keys())


def _check_leaf(key: str, where: str) -> None:
    keys = _leaf_keys()
    if key not in keys:
        close = difflib.get_close_matches(key, sorted(keys), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{where}: unknown config key '{key}'{hint}")


def _parse_factor(key: Any, raw: Any) -> tuple[str, list[Setting]]:
    if not isinstance(key, str) or not key:
        raise ConfigError(f"sweep 'grid': key {key!r} must be a dotted config key or a section name")
    if key == "seed":
        raise ConfigError("sweep 'grid': 'seed' is not a grid factor; list the seeds under 'seeds'")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"sweep 'grid.{key}': expected a non-empty list of values, got {raw!r}")
    settings: list[Setting] = []
    if key in SECTIONS:
        for item in raw:
            if not isinstance(item, Mapping) or not item:
                raise ConfigError(
                    f"sweep 'grid.{key}': '{key}' is a section, so each value must be a mapping such as "
                    f"{{label: ..., <key>: <value>}}; got {item!r}"
                )
            values: dict[str, Any] = {}
            label = None
            for k, v in item.items():
                if k == "label":
                    label = str(v)
                    continue
                dotted = str(k) if "." in str(k) else f"{key}.{k}"
                _check_leaf(dotted, f"sweep 'grid.{key}'")
                if isinstance(v, Mapping):
                    raise ConfigError(f"sweep 'grid.{key}': value of '{k}' must be a scalar or a list, got a mapping")
                values[dotted] = v
            if not values:
                raise ConfigError(f"sweep 'grid.{key}': the setting {item!r} sets no config key")
            settings.append(Setting(label if label is not None else default_label(values), values))
    else:
        _check_leaf(key, "sweep 'grid'")
        for v in raw:
            if isinstance(v, Mapping):
                raise ConfigError(
                    f"sweep 'grid.{key}': values of a config key must be scalars (or lists for list keys), got the mapping {v!r}; "
                    "for compound settings use a section name as the grid key (e.g. partition)"
                )
            settings.append(Setting(_format_value(v), {key: v}))
    labels = [s.label for s in settings]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(
            f"sweep 'grid.{key}': duplicate label(s) {', '.join(dup)}; give each setting a distinct label"
        )
    unsafe = sorted({safe_name(x) for x in labels if [safe_name(y) for y in labels].count(safe_name(x)) > 1})
    if unsafe:
        raise ConfigError(f"sweep 'grid.{key}': labels {labels} clash once made safe for file names; relabel them")
    return key, settings


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    def short(k: str) -> str:
        if "." not in k:
            return k
        section, leaf = k.rsplit(".", 1)
        return section.rsplit(".", 1)[-1] if leaf == "name" else leaf

    shorts = {k: short(k) for k in keys}
    counts = {s: list(shorts.values()).count(s) for s in shorts.values()}
    return {k: (s if counts[s] == 1 and s != "seed" else k) for k, s in shorts.items()}


def check_seeds(seeds: Any, kind: str) -> None:
    """``seeds`` of a sweep or tune file: None, or a non-empty list of distinct integers >= 0."""
    if seeds is None:
        return
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise ConfigError(f"{kind} key 'seeds' must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{kind} key 'seeds' lists a seed twice: {seeds}")


def read_spec_source(source: str | os.PathLike | Mapping[str, Any], kind: str) -> tuple[dict, Path, str, str | None]:
    """(its mapping, the folder its ``base`` path is relative to, its default name, its
    path) of a ``kind`` file (``sweep``, ``tune``) or of a mapping given in Python."""
    if isinstance(source, Mapping):
        return dict(source), Path.cwd(), kind, None
    path = Path(source)
    return load_yaml_mapping(path, f"{kind} file"), path.parent, path.stem, str(path)


def check_spec_keys(raw: Mapping[str, Any], allowed: Sequence[str], kind: str) -> None:
    """Refuse a key the ``kind`` file does not have, with the nearest one as a hint."""
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), allowed, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown {kind} key '{unknown[0]}'{hint}; allowed: {', '.join(allowed)}")


def load_base(raw: Mapping[str, Any], origin: Path, kind: str, unit: str) -> dict:
    """The experiment every ``unit`` (run, trial) of a ``kind`` file starts from: its
    ``base``, a mapping or a YAML path relative to ``origin``."""
    base_raw = raw.get("base")
    if base_raw in (None, ""):
        raise ConfigError(f"{kind} key 'base' is missing: name the experiment YAML every {unit} starts from")
    if isinstance(base_raw, Mapping):
        return dict(base_raw)
    if isinstance(base_raw, (str, os.PathLike)):
        bpath = Path(base_raw)
        return load_yaml_mapping(bpath if bpath.is_absolute() else origin / bpath, f"{kind} 'base' config file")
    raise ConfigError(f"{kind} key 'base' must be a path to an experiment YAML, got {base_raw!r}")


def spec_name(raw: Mapping[str, Any], default: str, kind: str) -> str:
    """The ``name`` of a ``kind`` file, or ``default`` (its file's stem)."""
    name = raw.get("name") or default
    if not isinstance(name, str):
        raise ConfigError(f"{kind} key 'name' must be a string, got {name!r}")
    return name


def parse_sweep(source: str | os.PathLike | Mapping[str, Any]) -> SweepSpec:
    """Read and check a sweep file or mapping (not yet the configs it plans)."""
    raw, origin, default_name, src_text = read_spec_source(source, "sweep")
    check_spec_keys(raw, SWEEP_KEYS, "sweep")
    base = load_base(raw, origin, "sweep", "run")
    overrides = _parse_overrides(raw.get("overrides") or [])
    grid = raw.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise ConfigError(f"sweep key 'grid' must be a mapping of config key -> list of values, got {grid!r}")
    parsed = [_parse_factor(k, v) for k, v in grid.items()]
    shorts = _short_names([k for k, _ in parsed])
    factors = [Factor(k, shorts[k], tuple(s)) for k, s in parsed]
    if "strategy.name" in grid and "strategy" in grid:
        raise ConfigError("sweep 'grid': give either 'strategy.name' or the 'strategy' section, not both")
    seeds = raw.get("seeds")
    check_seeds(seeds, "sweep")
    tune = _parse_tune_factors(raw.get("tune") or [], grid)
    name = spec_name(raw, default_name, "sweep")
    return SweepSpec(name, base, overrides, factors, list(seeds) if seeds is not None else None, tune, src_text)


def _parse_overrides(overrides: Any) -> list[str]:
    """A sweep's ``overrides``: a list of ``key=value`` strings."""
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"sweep key 'overrides' must be a list of key=value strings, got {overrides!r}")
    for o in overrides:
        if "=" not in o or o.startswith("="):
            raise ConfigError(f"sweep 'overrides': '{o}' is not of the form key=value (e.g. federation.rounds=5)")
    return list(overrides)


def _parse_tune_factors(tune: Any, grid: Mapping[str, Any]) -> list[str]:
    """A sweep's ``tune``: the grid factors that are hyperparameters (one name or a list)."""
    if isinstance(tune, str):
        tune = [tune]
    if not isinstance(tune, list) or not all(isinstance(t, str) for t in tune):
        raise ConfigError(f"sweep key 'tune' must be a list of grid factor names, got {tune!r}")
    for t in tune:
        if t not in grid:
            raise ConfigError(f"sweep 'tune': '{t}' is not a grid factor; grid factors: {', '.join(grid) or 'none'}")
    return list(tune)


# ---------------------------------------------------------------------- plan


@dataclass
class PlannedRun:
    """One run of the sweep: where it goes, what it sets, and how it ended."""

    name: str
    factors: dict[str, str]
    seed: int
    config: dict
    hash: str
    phase: str = "grid"  # grid | cv | final
    fold: int | None = None
    status: str = "pending"  # pending | finished | failed
    error: str | None = None
    traceback: str | None = None
    summary: dict | None = None
    skipped: bool = False


def compose(spec: SweepSpec, values: Mapping[str, Any], seed: int | None, where: str = "sweep") -> ExperimentConfig:
    """The validated ExperimentConfig of one run: base < overrides < grid values < seed.

    The base's ``strategy.*`` hyperparameters belong to the base's algorithm: a grid
    value that picks another algorithm starts from that algorithm's defaults (keys in
    ``overrides`` and in the grid setting itself always apply).
    """
    try:
        base_tree = dict(spec.base)
        base_strategy = base_tree.get("strategy")
        picked = values.get("strategy.name")
        if picked is not None and isinstance(base_strategy, Mapping) and base_strategy.get("name", "fedavg") != picked:
            base_tree["strategy"] = {"name": picked}
        base = OmegaConf.create(base_tree)
        over = OmegaConf.from_dotlist(spec.overrides)
        grid = OmegaConf.create({})
        for k, v in values.items():
            OmegaConf.update(grid, k, v, merge=False, force_add=True)
        parts = [base, over, grid]
        if seed is not None:
            parts.append(OmegaConf.create({"seed": seed}))
        tree = OmegaConf.to_container(OmegaConf.merge(*parts), resolve=False)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where}: cannot merge the settings: {_one_line(str(exc).splitlines()[0])}") from exc
    try:
        return load_config(tree)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def combos(factors: Sequence[Factor]) -> list[tuple[Setting, ...]]:
    """Every combination of the factors' settings, in grid order (the last factor fastest)."""
    return list(itertools.product(*[f.settings for f in factors]))


def _run_name(factors: Sequence[Factor], combo: Sequence[Setting], seed: int, fold: int | None = None) -> str:
    parts = [f"{safe_name(f.short)}={safe_name(s.label)}" for f, s in zip(factors, combo)]
    parts.append(f"seed={seed}")
    if fold is not None:
        parts.append(f"fold={fold}")
    return safe_name("__".join(parts), limit=240)


def plan_runs(
    spec: SweepSpec,
    settings: Iterable[tuple[Setting, ...]],
    phase: str,
    extra: Mapping[str, Any] | None = None,
    fold: int | None = None,
    prefix: str = "",
) -> list[PlannedRun]:
    """One validated PlannedRun per combination of ``settings`` and seed; ``extra`` keys
    (cross-validation's fold) apply after the grid values."""
    runs = []
    for combo in settings:
        values: dict[str, Any] = {}
        for s in combo:
            values.update(s.values)
        values.update(extra or {})
        for seed in spec.seeds or [None]:
            labels = {f.key: s.label for f, s in zip(spec.factors, combo)}
            where = f"sweep run {', '.join(f'{k}={v}' for k, v in labels.items()) or 'base'}" + (
                f", seed {seed}" if seed is not None else ""
            )
            cfg = compose(spec, values, seed, where)
            name = prefix + _run_name(spec.factors, combo, cfg.seed, fold)
            runs.append(PlannedRun(name, labels, cfg.seed, to_dict(cfg), config_hash(cfg), phase, fold))
    return runs


def plan_sweep(source: str | os.PathLike | Mapping[str, Any]) -> tuple[SweepSpec, list[PlannedRun]]:
    """Parse a sweep and plan (and validate) its grid runs without running anything."""
    spec = parse_sweep(source)
    return spec, plan_runs(spec, combos(spec.factors), "grid")
