"""Sweeps: a grid of experiments (strategies x partitions x seeds), its table and model selection.

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
built and validated (:func:`fedsim.config.load_config`) before anything runs.

The sweep directory holds one ordinary run directory per run (named from its
settings, e.g. ``strategy=fedprox__partition=Dir(0.5)__seed=1``), ``sweep.json`` (the
index: config hash -> run directory, status and one-line error of every run),
``summary.csv`` (one row per run) and ``table.md``.

Tables report mean ± std over seeds where std is the **sample** standard deviation
(Bessel-corrected, ddof=1, ``statistics.stdev``); with a single finished seed only the
mean is shown. Accuracies are in percent with two decimals, as in NIID-Bench (Li et
al. 2022, "Federated Learning on Non-IID Data Silos: An Experimental Study").

Model selection (``select_by``): the factors named in ``tune`` are hyperparameters.
For every combination of the other factors (a *group*) the tune setting with the best
mean validation metric over seeds is chosen, without reading any test metric, and only
that setting's test accuracy is reported (``selection.md``/``selection.csv``). With
``folds=K`` the validation score is K-fold cross-validation on the training data
(``data.cv_folds=K``, ``data.cv_fold=i``: the held-out fold is the evaluation set, so a
fold run's ``test_*`` metrics are validation metrics); the chosen setting of each group
then runs on the full training data and its real test accuracy is reported.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import multiprocessing
import os
import re
import statistics
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import all_keys, config_hash, load_config, load_yaml_mapping, to_dict
from .errors import ConfigError, RunDirError

log = logging.getLogger(__name__)

SWEEP_KEYS = ("name", "base", "overrides", "grid", "seeds", "tune")
SECTIONS = ("data", "partition", "model", "train", "strategy", "federation", "engine", "eval", "output")
STRATEGY_FACTORS = ("strategy.name", "strategy")
INDEX_FILE = "sweep.json"
#: summary.json statuses of a run that has ended (a diverged run is a result, marked in the table)
DONE = ("finished", "diverged")

#: summary.json keys copied into summary.csv, in this order
METRIC_COLUMNS = (
    "test_accuracy",
    "best_test_accuracy",
    "test_f1_macro",
    "test_precision_macro",
    "test_recall_macro",
    "test_loss",
    "train_accuracy",
    "val_accuracy",
    "wall_time_s",
)
#: summary.json["heterogeneity"] keys copied into summary.csv
HETEROGENEITY_COLUMNS = ("tv_mean", "hellinger_mean", "js_mean", "size_cv")
#: the ablation table's columns: (summary key, header, shown in percent)
ABLATION_COLUMNS = (
    ("test_accuracy", "test acc (%)", True),
    ("best_test_accuracy", "best test acc (%)", True),
    ("test_f1_macro", "test F1 macro (%)", True),
    ("test_loss", "test loss", False),
)


# ------------------------------------------------------------------ sweep spec


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
        return [s.label for s in self.settings]


@dataclass
class SweepSpec:
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
        import hashlib

        s = s[: limit - 9] + "_" + hashlib.sha256(s.encode()).hexdigest()[:8]
    return s


def _leaf_keys() -> set[str]:
    return set(all_keys())


def _check_leaf(key: str, where: str) -> None:
    keys = _leaf_keys()
    if key not in keys:
        import difflib

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
        raise ConfigError(f"sweep 'grid.{key}': duplicate label(s) {', '.join(dup)}; give each setting a distinct label")
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


def parse_sweep(source: str | os.PathLike | Mapping[str, Any]) -> SweepSpec:
    """Read and check a sweep file or mapping (not yet the configs it plans)."""
    if isinstance(source, Mapping):
        raw = dict(source)
        origin = Path.cwd()
        default_name = "sweep"
        src_text = None
    else:
        path = Path(source)
        raw = load_yaml_mapping(path, "sweep file")
        origin = path.parent
        default_name = path.stem
        src_text = str(path)
    unknown = [k for k in raw if k not in SWEEP_KEYS]
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), SWEEP_KEYS, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown sweep key '{unknown[0]}'{hint}; allowed: {', '.join(SWEEP_KEYS)}")
    if "base" not in raw or raw["base"] in (None, ""):
        raise ConfigError("sweep key 'base' is missing: name the experiment YAML every run starts from")
    base_raw = raw["base"]
    if isinstance(base_raw, Mapping):
        base = dict(base_raw)
    elif isinstance(base_raw, (str, os.PathLike)):
        bpath = Path(base_raw)
        if not bpath.is_absolute():
            bpath = origin / bpath
        base = load_yaml_mapping(bpath, "sweep 'base' config file")
    else:
        raise ConfigError(f"sweep key 'base' must be a path to an experiment YAML, got {base_raw!r}")

    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"sweep key 'overrides' must be a list of key=value strings, got {overrides!r}")
    for o in overrides:
        if "=" not in o or o.startswith("="):
            raise ConfigError(f"sweep 'overrides': '{o}' is not of the form key=value (e.g. federation.rounds=5)")

    grid = raw.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise ConfigError(f"sweep key 'grid' must be a mapping of config key -> list of values, got {grid!r}")
    parsed = [_parse_factor(k, v) for k, v in grid.items()]
    shorts = _short_names([k for k, _ in parsed])
    factors = [Factor(k, shorts[k], tuple(s)) for k, s in parsed]
    if "strategy.name" in grid and "strategy" in grid:
        raise ConfigError("sweep 'grid': give either 'strategy.name' or the 'strategy' section, not both")

    seeds = raw.get("seeds")
    if seeds is not None:
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise ConfigError(f"sweep key 'seeds' must be a non-empty list of integers >= 0, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"sweep key 'seeds' lists a seed twice: {seeds}")

    tune = raw.get("tune") or []
    if isinstance(tune, str):
        tune = [tune]
    if not isinstance(tune, list) or not all(isinstance(t, str) for t in tune):
        raise ConfigError(f"sweep key 'tune' must be a list of grid factor names, got {tune!r}")
    for t in tune:
        if t not in grid:
            raise ConfigError(f"sweep 'tune': '{t}' is not a grid factor; grid factors: {', '.join(grid) or 'none'}")

    name = raw.get("name") or default_name
    if not isinstance(name, str):
        raise ConfigError(f"sweep key 'name' must be a string, got {name!r}")
    return SweepSpec(str(name), base, list(overrides), factors, list(seeds) if seeds is not None else None, list(tune), src_text)


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


def compose(spec: SweepSpec, values: Mapping[str, Any], seed: int | None, where: str = "sweep"):
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


def _combos(factors: Sequence[Factor]) -> list[tuple[Setting, ...]]:
    return list(itertools.product(*[f.settings for f in factors]))


def _run_name(factors: Sequence[Factor], combo: Sequence[Setting], seed: int, fold: int | None = None) -> str:
    parts = [f"{safe_name(f.short)}={safe_name(s.label)}" for f, s in zip(factors, combo)]
    parts.append(f"seed={seed}")
    if fold is not None:
        parts.append(f"fold={fold}")
    return safe_name("__".join(parts), limit=240)


def _plan(spec: SweepSpec, combos: Iterable[tuple[Setting, ...]], phase: str, extra: Mapping[str, Any] | None = None,
          fold: int | None = None, prefix: str = "") -> list[PlannedRun]:
    runs = []
    for combo in combos:
        values: dict[str, Any] = {}
        for s in combo:
            values.update(s.values)
        values.update(extra or {})
        for seed in spec.seeds or [None]:
            labels = {f.key: s.label for f, s in zip(spec.factors, combo)}
            where = f"sweep run {', '.join(f'{k}={v}' for k, v in labels.items()) or 'base'}" + (f", seed {seed}" if seed is not None else "")
            cfg = compose(spec, values, seed, where)
            name = prefix + _run_name(spec.factors, combo, cfg.seed, fold)
            runs.append(PlannedRun(name, labels, cfg.seed, to_dict(cfg), config_hash(cfg), phase, fold))
    return runs


# ------------------------------------------------------------------ execution


def _one_line_error(exc: BaseException) -> str:
    msg = _one_line(str(exc)) or "(no message)"
    text = f"{type(exc).__name__}: {msg}"
    return text if len(text) <= 400 else text[:397] + "..."


def _run_one(config: dict, run_dir: str, resume: bool, hooks: Any = None) -> dict:
    """Run one experiment; never raises (the sweep records the failure and goes on)."""
    try:
        from .api import run

        result = run(config, out=run_dir, resume=resume, hooks=hooks)
        return {"status": "finished", "summary": result.summary}
    except Exception as exc:  # any failure of one run is that run's, not the sweep's
        return {"status": "failed", "error": _one_line_error(exc), "traceback": traceback.format_exc()}


def _init_worker(threads: int, flwr_level: int) -> None:
    """A worker process of the pool: end with the sweep, share the cores, keep Flower
    as quiet as the parent."""
    import torch

    from .lifecycle import die_with_parent

    die_with_parent()
    torch.set_num_threads(threads)
    logging.getLogger("flwr").setLevel(flwr_level)


class _Display:
    """The sweep's rich progress display (runs done / running / failed / time left)."""

    def __init__(self, enabled: bool, total: int, done: int, title: str) -> None:
        self.enabled = enabled and total > 0
        self.failed = 0
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.task = self.progress.add_task(title, total=total, completed=done, info="")
        self.round_task = None
        self.progress.start()

    def update(self, done: int, running: int) -> None:
        if self.enabled:
            info = f"running {running}  failed {self.failed}"
            self.progress.update(self.task, completed=done, info=info)

    def run_started(self, name: str) -> Any:
        """RunHooks showing the rounds of an in-process run."""
        if not self.enabled:
            return None
        from .server import RunHooks

        def on_start(start_round: int, rounds: int) -> None:
            if self.round_task is not None:
                self.progress.remove_task(self.round_task)
            self.round_task = self.progress.add_task(f"  {name[:60]}", total=rounds, completed=start_round - 1, info="")

        def on_round(row: dict) -> None:
            if self.round_task is not None:
                acc = row.get("test_accuracy")
                self.progress.update(self.round_task, completed=row["round"], info=f"acc {acc:.4f}" if acc is not None else "")

        return RunHooks(on_start=on_start, on_round=on_round)

    def stop(self) -> None:
        if self.enabled:
            if self.round_task is not None:
                self.progress.remove_task(self.round_task)
            self.progress.stop()


class _Index:
    """``sweep.json``: config hash -> run directory, and every run's status."""

    def __init__(self, sweep_dir: Path, spec: SweepSpec, meta: dict) -> None:
        self.path = sweep_dir / INDEX_FILE
        self.spec = spec
        self.meta = meta
        self.runs: list[PlannedRun] = []
        self.hashes: dict[str, str] = {}
        self.selection: list[dict] | None = None
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
                self.hashes = dict(old.get("hashes", {}))
            except (json.JSONDecodeError, OSError):
                log.warning("'%s' is unreadable; matching runs by their config.yaml only", self.path)

    def write(self) -> None:
        from .store import atomic_write_json

        for r in self.runs:
            self.hashes[r.hash] = r.name
        atomic_write_json(
            self.path,
            {
                "version": 1,
                "name": self.spec.name,
                "sweep_file": self.spec.source,
                **self.meta,
                "factors": [{"key": f.key, "short": f.short, "labels": f.labels} for f in self.spec.factors],
                "tune": self.spec.tune,
                "seeds": self.spec.seeds,
                "hashes": self.hashes,
                "runs": [
                    {"name": r.name, "hash": r.hash, "factors": r.factors, "seed": r.seed, "phase": r.phase, "fold": r.fold,
                     "status": r.status, "error": r.error, "traceback": r.traceback}
                    for r in self.runs
                ],
                "selection": self.selection,
            },
        )


def _dir_hash(run_dir: Path) -> str | None:
    """The config hash of an existing run directory (None: no readable config.yaml)."""
    try:
        return config_hash(load_config(run_dir / "config.yaml"))
    except Exception as exc:  # a foreign or broken directory is not ours to resume
        log.warning("ignoring '%s': %s", run_dir, _one_line_error(exc))
        return None


def _assign_dirs(runs: list[PlannedRun], sweep_dir: Path) -> None:
    """Every planned run gets its own directory, named from its grid settings (two
    settings that resolve to the same config still get two); a directory of that name
    holding another config (the sweep file changed) is left alone: the run goes to
    ``name__<hash>``."""
    for r in runs:
        run_dir = sweep_dir / r.name
        if (run_dir / "config.yaml").exists() and _dir_hash(run_dir) != r.hash:
            r.name = f"{r.name}__{r.hash[:8]}"


def _finished_summary(run_dir: Path, rounds: int) -> dict | None:
    """The summary of a run that has ended with at least ``rounds`` rounds (a run with
    fewer, as after raising federation.rounds, is resumed and extended)."""
    path = run_dir / "summary.json"
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return None
    if not isinstance(summary, dict) or summary.get("status") not in DONE:
        return None
    if summary.get("status") == "finished" and int(summary.get("rounds") or 0) < rounds:
        return None
    return summary


def _execute(runs: list[PlannedRun], sweep_dir: Path, workers: int, index: _Index, display_enabled: bool, title: str) -> None:
    """Run what is not finished yet: in this process (workers=1) or in a spawn pool."""
    todo: list[tuple[PlannedRun, bool]] = []
    for r in runs:
        run_dir = sweep_dir / r.name
        summary = _finished_summary(run_dir, int(r.config["federation"]["rounds"]))
        if summary is not None:
            r.status, r.summary, r.error, r.skipped = "finished", summary, None, True
            continue
        resume_it = run_dir.is_dir() and any(run_dir.iterdir())
        todo.append((r, resume_it))
    done = len(runs) - len(todo)
    if done:
        log.info("%d of %d runs already finished; skipped", done, len(runs))
    index.write()
    display = _Display(display_enabled, len(runs), done, title)

    def record(r: PlannedRun, out: dict) -> None:
        nonlocal done
        done += 1
        r.status = out["status"]
        r.summary = out.get("summary")
        r.error = out.get("error")
        r.traceback = out.get("traceback")
        if r.status == "failed":
            display.failed += 1
            log.warning("run %s failed: %s", r.name, r.error)
        else:
            acc = (r.summary or {}).get("test_accuracy")
            log.info("run %d/%d finished: %s (test_accuracy %s)", done, len(runs), r.name, acc)
        index.write()

    try:
        if workers <= 1 or len(todo) <= 1:
            for r, resume_it in todo:
                display.update(done, 1)
                record(r, _run_one(r.config, str(sweep_dir / r.name), resume_it, display.run_started(r.name)))
                display.update(done, 0)
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            ctx = multiprocessing.get_context("spawn")
            flwr_level = logging.getLogger("flwr").getEffectiveLevel()
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx, initializer=_init_worker,
                                     initargs=(threads, flwr_level)) as pool:
                pending: dict[Future, PlannedRun] = {
                    pool.submit(_run_one, r.config, str(sweep_dir / r.name), resume_it): r for r, resume_it in todo
                }
                try:
                    while pending:
                        display.update(done, min(workers, len(pending)))
                        finished, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            r = pending.pop(fut)
                            try:
                                out = fut.result()
                            except Exception as exc:  # the worker process died (memory, signal)
                                out = {"status": "failed", "error": _one_line_error(exc), "traceback": traceback.format_exc()}
                            record(r, out)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
        display.update(done, 0)
    finally:
        display.stop()
        index.write()


# ------------------------------------------------------------------ statistics


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std with ddof=1 or None for n < 2, n) of the finite values."""
    xs = [float(v) for v in values if v is not None and v != "" and math.isfinite(float(v))]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def format_mean_std(mean: float | None, std: float | None, percent: bool = True, digits: int | None = None) -> str:
    """``82.00 ± 1.23`` (percent, 2 decimals) or ``0.5123 ± 0.0100`` (4 decimals); ``–`` when empty."""
    if mean is None:
        return "–"
    scale = 100.0 if percent else 1.0
    d = digits if digits is not None else (2 if percent else 4)
    text = f"{mean * scale:.{d}f}"
    if std is not None:
        text += f" ± {std * scale:.{d}f}"
    return text


def _group(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[tuple, list[Mapping[str, Any]]]:
    out: dict[tuple, list] = {}
    for r in rows:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def _ordered_combos(factors: Sequence[Factor]) -> list[tuple[str, ...]]:
    return list(itertools.product(*[f.labels for f in factors]))


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _std_note(seeds: Sequence[int] | None) -> str:
    s = f"over seeds {list(seeds)}" if seeds else "over seeds"
    return f"mean ± sample std (ddof=1) {s}"


def make_table(rows: Sequence[Mapping[str, Any]], factors: Sequence[Factor], seeds: Sequence[int] | None = None,
               caption_extra: str = "") -> str:
    """The Markdown results table of finished rows (see the module docstring).

    With a strategy factor (``strategy.name`` or the ``strategy`` section): rows are the
    combinations of the other factors, columns the strategies, each cell the test
    accuracy in % as mean ± std, the best mean of a row in bold (NIID-Bench's layout).
    Otherwise an ablation table: one row per combination of the factors and the
    columns of :data:`ABLATION_COLUMNS`.
    """
    ok = [r for r in rows if r.get("status") == "finished"]
    strat = next((f for f in factors if f.key in STRATEGY_FACTORS), None)
    lines: list[str] = []
    if strat is not None:
        others = [f for f in factors if f is not strat]
        groups = _group(ok, [f.key for f in others] + [strat.key])
        caption = f"Test accuracy (%) after the last round, {_std_note(seeds)}; the best strategy of each row in bold."
        lines += [caption + (" " + caption_extra if caption_extra else ""), ""]
        head = " / ".join(f.short for f in others) or "setting"
        lines.append(_md_row([head] + strat.labels))
        lines.append(_md_row(["---"] + ["---:"] * len(strat.labels)))
        expected = len(seeds) if seeds else None
        for combo in _ordered_combos(others) or [()]:
            stats = []
            for s in strat.labels:
                members = groups.get(tuple(combo) + (s,), [])
                m, sd, n = mean_std(r.get("test_accuracy") for r in members)
                stats.append((m, sd, n, sum(1 for r in members if r.get("diverged_round") is not None)))
            means = [m for m, _, _, _ in stats if m is not None]
            best = max(means) if means else None
            cells = []
            for m, sd, n, div in stats:
                text = format_mean_std(m, sd)
                if m is not None and best is not None and round(m * 100, 2) == round(best * 100, 2):
                    text = f"**{text}**"
                if m is not None and expected is not None and n < expected:
                    text += f" (n={n})"
                if div:
                    text += f" † ({div} diverged)"
                cells.append(text)
            lines.append(_md_row([" / ".join(combo) or "all"] + cells))
        if any(r.get("diverged_round") is not None for r in ok):
            lines += ["", "† runs whose training diverged (summary status 'diverged', see diverged_round in summary.csv)."]
    else:
        groups = _group(ok, [f.key for f in factors])
        caption = f"Final-round metrics, {_std_note(seeds)}; accuracies and F1 in %."
        lines += [caption + (" " + caption_extra if caption_extra else ""), ""]
        head = " / ".join(f.short for f in factors) or "setting"
        lines.append(_md_row([head] + [h for _, h, _ in ABLATION_COLUMNS] + ["n"]))
        lines.append(_md_row(["---"] + ["---:"] * (len(ABLATION_COLUMNS) + 1)))
        for combo in _ordered_combos(factors) or [()]:
            members = groups.get(tuple(combo), [])
            cells = []
            for key, _, pct in ABLATION_COLUMNS:
                m, sd, _ = mean_std(r.get(key) for r in members)
                cells.append(format_mean_std(m, sd, percent=pct))
            lines.append(_md_row([" / ".join(combo) or "all"] + cells + [str(len(members))]))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ selection


@dataclass
class Choice:
    """The tune setting chosen for one group, and the validation scores it beat."""

    group: dict[str, str]
    chosen: dict[str, str] | None
    score_mean: float | None
    score_std: float | None
    score_n: int
    candidates: list[dict] = field(default_factory=list)
    test_mean: float | None = None
    test_std: float | None = None
    test_n: int = 0


def minimize_metric(metric: str) -> bool:
    return "loss" in metric


def select_settings(rows: Sequence[Mapping[str, Any]], group_keys: Sequence[str], tune_keys: Sequence[str],
                    score_key: str, minimize: bool = False) -> list[Choice]:
    """Per group (combination of ``group_keys``) the tune combination with the best mean score.

    ``rows`` should carry only factor labels and ``score_key``: the caller strips every
    test metric first, so the choice cannot look at the test set. Ties go to the
    first candidate in grid order.
    """
    by_group: dict[tuple, dict[tuple, list[float]]] = {}
    for r in rows:
        g = tuple(r[k] for k in group_keys)
        t = tuple(r[k] for k in tune_keys)
        by_group.setdefault(g, {}).setdefault(t, [])
        v = r.get(score_key)
        if v is not None and math.isfinite(float(v)):
            by_group[g][t].append(float(v))
    choices = []
    for g, cands in by_group.items():
        best = None
        cand_rows = []
        for t, vals in cands.items():
            m, sd, n = mean_std(vals)
            cand_rows.append({"tune": dict(zip(tune_keys, t)), "mean": m, "std": sd, "n": n})
            if m is None:
                continue
            if best is None or (m < best[1] if minimize else m > best[1]):
                best = (t, m, sd, n)
        if best is None:
            choices.append(Choice(dict(zip(group_keys, g)), None, None, None, 0, cand_rows))
        else:
            choices.append(Choice(dict(zip(group_keys, g)), dict(zip(tune_keys, best[0])), best[1], best[2], best[3], cand_rows))
    return choices


def _selection_outputs(choices: Sequence[Choice], spec: SweepSpec, metric: str, folds: int) -> tuple[str, str, list[dict]]:
    group_factors = [f for f in spec.factors if f.key not in spec.tune]
    tune_factors = [f for f in spec.factors if f.key in spec.tune]
    how = (f"{folds}-fold cross-validation on the training data (held-out-fold {metric.replace('val_', '', 1)})" if folds
           else f"validation metric {metric}")
    lines = [
        f"Model selection: for each group the {', '.join(f.short for f in tune_factors)} setting with the best mean "
        f"{how} over {'seeds and folds' if folds else 'seeds'} was chosen without reading test metrics; test accuracy (%) of the chosen setting, "
        f"{_std_note(spec.seeds)}" + ("; the chosen setting was retrained on the full training data." if folds else "."),
        "",
    ]
    score_pct = "accuracy" in metric
    head = [f.short for f in group_factors] or ["group"]
    lines.append(_md_row(head + [f"chosen {f.short}" for f in tune_factors] + [f"{'CV' if folds else 'validation'} score", "test acc (%)"]))
    lines.append(_md_row(["---"] * len(head) + ["---"] * len(tune_factors) + ["---:", "---:"]))
    csv_rows = []
    for c in choices:
        gcells = [c.group[f.key] for f in group_factors] or ["all"]
        tcells = [c.chosen[f.key] if c.chosen else "–" for f in tune_factors]
        lines.append(_md_row(gcells + tcells + [format_mean_std(c.score_mean, c.score_std, percent=score_pct),
                                                format_mean_std(c.test_mean, c.test_std)]))
        csv_rows.append({**c.group, **{f"chosen {f.key}": (c.chosen or {}).get(f.key) for f in tune_factors},
                         "score_metric": metric, "score_mean": c.score_mean, "score_std": c.score_std, "score_n": c.score_n,
                         "test_accuracy_mean": c.test_mean, "test_accuracy_std": c.test_std, "test_n": c.test_n})
    lines += ["", f"Candidates (validation score, mean ± sample std over {'seeds and folds' if folds else 'seeds'}):", ""]
    lines.append(_md_row(head + [f.short for f in tune_factors] + ["score", "n"]))
    lines.append(_md_row(["---"] * (len(head) + len(tune_factors)) + ["---:", "---:"]))
    for c in choices:
        gcells = [c.group[f.key] for f in group_factors] or ["all"]
        for cand in c.candidates:
            mark = "**" if c.chosen == cand["tune"] else ""
            score = format_mean_std(cand["mean"], cand["std"], percent=score_pct)
            lines.append(_md_row(gcells + [cand["tune"][f.key] for f in tune_factors] + [f"{mark}{score}{mark}", str(cand["n"])]))
    md = "\n".join(lines) + "\n"
    return md, _to_csv(csv_rows), csv_rows


# ---------------------------------------------------------------------- output


def _row(r: PlannedRun, factors: Sequence[Factor], with_phase: bool) -> dict[str, Any]:
    s = r.summary or {}
    het = s.get("heterogeneity") or {}
    row: dict[str, Any] = {"run": r.name}
    for f in factors:
        row[f.key] = r.factors.get(f.key)
    row["seed"] = r.seed
    if with_phase:
        row["phase"] = r.phase
        row["fold"] = r.fold
    row["status"] = r.status
    row["error"] = r.error
    row["diverged_round"] = s.get("diverged_round")
    for k in METRIC_COLUMNS:
        row[k] = s.get(k)
    for k in HETEROGENEITY_COLUMNS:
        row[k] = het.get(k)
    row["config_hash"] = r.hash
    return row


def _to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return buf.getvalue()


def read_summary_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """summary.csv back as dicts; numbers as floats, empty cells as None."""
    out = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in r.items():
                if v == "":
                    row[k] = None
                elif k in METRIC_COLUMNS or k in HETEROGENEITY_COLUMNS:
                    row[k] = float(v)
                elif k in ("seed", "fold"):
                    row[k] = int(v)
                else:
                    row[k] = v
            out.append(row)
    return out


@dataclass
class SweepResult:
    """What a sweep left in its directory."""

    sweep_dir: Path
    rows: list[dict[str, Any]]
    table_markdown: str
    n_finished: int
    n_failed: int
    selection: list[Choice] | None = None
    selection_markdown: str | None = None
    wall_time_s: float = 0.0

    @property
    def n_runs(self) -> int:
        return len(self.rows)


# ----------------------------------------------------------------------- sweep


def plan_sweep(source: str | os.PathLike | Mapping[str, Any]) -> tuple[SweepSpec, list[PlannedRun]]:
    """Parse a sweep and plan (and validate) its grid runs without running anything."""
    spec = parse_sweep(source)
    return spec, _plan(spec, _combos(spec.factors), "grid")


def sweep(
    sweep_file_or_mapping: str | os.PathLike | Mapping[str, Any],
    out: str | os.PathLike | None = None,
    workers: int = 1,
    resume: bool = False,
    select_by: str | None = None,
    folds: int = 0,
    progress: bool = False,
) -> SweepResult:
    """Run every experiment of a sweep; write ``summary.csv``, ``table.md`` and ``sweep.json``.

    ``workers`` runs at once, each in a spawned process with ``cpu_count // workers``
    torch threads (``engine.threads`` of the config wins when set). A failing run is
    recorded (status ``failed`` and a one-line error) and the others go on.
    ``resume`` matches runs by config hash: finished ones are skipped, interrupted ones
    continue from their last checkpoint. ``select_by`` (a validation metric such as
    ``val_accuracy``) and ``folds`` do honest model selection over the ``tune`` factors
    (module docstring). Tables use the sample std (ddof=1) over seeds.

    Worker processes are started with the ``spawn`` method, which re-imports the
    calling script: a script that calls ``sweep(..., workers>1)`` needs the usual
    ``if __name__ == "__main__":`` guard (the ``fedsim`` command has it).
    """
    t0 = time.perf_counter()
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1, got {workers!r}")
    if not isinstance(folds, int) or folds < 0 or folds == 1:
        raise ConfigError(f"--folds must be 0 (no cross-validation) or an integer K >= 2, got {folds!r}")
    spec = parse_sweep(sweep_file_or_mapping)
    if folds and select_by is None:
        select_by = "val_accuracy"
    if select_by is not None:
        if not spec.tune:
            raise ConfigError("--select-by needs 'tune' in the sweep file: the grid factors that are hyperparameters to choose")
        if not select_by.startswith("val_"):
            raise ConfigError(f"--select-by '{select_by}' is not a validation metric; choose one such as val_accuracy "
                              "(selecting by a test or training metric is not honest model selection)")

    # plan and validate every config before anything runs
    if folds:
        fold_runs: list[PlannedRun] = []
        for i in range(folds):
            fold_runs += _plan(spec, _combos(spec.factors), "cv", {"data.cv_folds": folds, "data.cv_fold": i}, fold=i, prefix="cv/")
        candidates = {tuple(s.label for s in combo): combo for combo in _combos(spec.factors)}
        final_plans = {k: _plan(spec, [c], "final", {"data.cv_folds": 0, "data.cv_fold": 0}) for k, c in candidates.items()}
        runs = fold_runs
    else:
        runs = _plan(spec, _combos(spec.factors), "grid")
        if select_by is not None:
            bad = next((r for r in runs if r.config["federation"]["fraction_evaluate"] <= 0), None)
            if bad is not None:
                raise ConfigError(
                    f"--select-by {select_by} needs local validation: add federation.fraction_evaluate=1.0 and "
                    f"data.val_fraction=0.2 (for example) to the sweep's overrides, or use --folds K (run '{bad.name}')"
                )
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError("sweep: two runs get the same directory name; give the grid settings distinct labels")

    sweep_dir = Path(out) if out is not None else Path("runs") / f"sweep-{safe_name(spec.name)}"
    from . import rundir

    rundir.claim(sweep_dir, "sweep", resume=resume, overwrite=False, check_only=True)
    lock = rundir.DirLock(sweep_dir, "sweep").acquire()
    try:
        rundir.claim(sweep_dir, "sweep", resume=resume, overwrite=False)
        return _sweep_in(spec, runs, sweep_dir, workers, select_by, folds, progress, final_plans if folds else {}, t0)
    finally:
        lock.release()


def _sweep_in(spec: SweepSpec, runs: list[PlannedRun], sweep_dir: Path, workers: int, select_by: str | None, folds: int,
              progress: bool, final_plans: dict, t0: float) -> "SweepResult":
    """The sweep's work in its claimed and locked directory."""
    index = _Index(sweep_dir, spec, {"select_by": select_by, "folds": folds})
    _assign_dirs(runs, sweep_dir)
    index.runs = list(runs)
    title = f"sweep {spec.name}" + (" (cross-validation)" if folds else "")
    _execute(runs, sweep_dir, workers, index, progress, title)

    choices: list[Choice] | None = None
    sel_md = None
    group_factors = [f for f in spec.factors if f.key not in spec.tune]
    tune_keys = [f.key for f in spec.factors if f.key in spec.tune]
    table_factors = list(spec.factors)
    table_runs = runs
    if select_by is not None:
        score_key = ("test_" + select_by[len("val_"):]) if folds else select_by
        # honest selection: the selector sees factor labels and the validation score only
        visible = [{**r.factors, "score": (r.summary or {}).get(score_key)} for r in runs if r.status == "finished"]
        if not any(v["score"] is not None for v in visible) and any(r.status == "finished" for r in runs):
            raise ConfigError(f"--select-by '{select_by}': no finished run reports it in summary.json")
        choices = select_settings(visible, [f.key for f in group_factors], tune_keys, "score", minimize_metric(select_by))
        if folds:
            finals: list[PlannedRun] = []
            for c in choices:
                if c.chosen is None:
                    continue
                key = tuple({**c.group, **c.chosen}[f.key] for f in spec.factors)
                finals += final_plans[key]
            _assign_dirs(finals, sweep_dir)
            index.runs = runs + finals
            _execute(finals, sweep_dir, workers, index, progress, f"sweep {spec.name} (chosen settings)")
            table_runs = finals
            table_factors = group_factors
            runs = runs + finals
        for c in choices:
            if c.chosen is None:
                continue
            target = {**c.group, **c.chosen}
            m, sd, n = mean_std((r.summary or {}).get("test_accuracy") for r in table_runs
                                if r.status == "finished" and all(r.factors[k] == v for k, v in target.items()))
            c.test_mean, c.test_std, c.test_n = m, sd, n

    rows = [_row(r, spec.factors, with_phase=bool(folds)) for r in runs]
    table_rows = [_row(r, spec.factors, with_phase=False) for r in table_runs]
    extra = "Settings chosen by cross-validation (selection.md)." if folds else ""
    table = make_table(table_rows, table_factors, spec.seeds, extra)
    from .store import atomic_write_text

    atomic_write_text(sweep_dir / "summary.csv", _to_csv(rows))
    title_line = f"# {spec.name}\n\n"
    atomic_write_text(sweep_dir / "table.md", title_line + table)
    if choices is not None:
        sel_md, sel_csv, sel_rows = _selection_outputs(choices, spec, select_by or "", folds)
        atomic_write_text(sweep_dir / "selection.md", f"# {spec.name}: model selection\n\n" + sel_md)
        atomic_write_text(sweep_dir / "selection.csv", sel_csv)
        index.selection = sel_rows
    index.write()
    n_failed = sum(r.status == "failed" for r in runs)
    n_finished = sum(r.status == "finished" for r in runs)
    wall = time.perf_counter() - t0
    log.info("sweep %s: %d finished, %d failed in %.1f s (%s)", spec.name, n_finished, n_failed, wall, sweep_dir)
    return SweepResult(sweep_dir, rows, table, n_finished, n_failed, choices, sel_md, wall)
