"""Reading run and sweep directories for a report: the runs with their factors, status
and summaries (:class:`SweepView`), and how figures group them into lines and panels
(:class:`Layout`).

A sweep directory is read from its index ``sweep.json``; a folder of run directories
without one is grouped by strategy and partition, read from each run's summary and
config.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedsim.errors import RunDirError
from fedsim.rundir.plots import partition_label
from fedsim.rundir.store import read_jsonl
from fedsim.sweeps import DONE, INDEX_FILE, STRATEGY_FACTORS, Factor, Setting


@dataclass
class RunInfo:
    """One run of a sweep as the report sees it."""

    name: str
    path: Path
    factors: dict[str, str]
    seed: int | None
    status: str
    error: str | None = None
    summary: dict | None = None
    _history: list[dict] | None = field(default=None, repr=False)

    @property
    def history(self) -> list[dict]:
        """The run's metrics.jsonl rows (read once, on first use)."""
        if self._history is None:
            self._history = read_jsonl(self.path / "metrics.jsonl")
        return self._history

    @property
    def scheme(self) -> str | None:
        """The run's partition scheme, from its summary or else its config."""
        part = (self.summary or {}).get("partition") or {}
        if part.get("scheme"):
            return part["scheme"]
        cfg = read_config(self.path)
        return (cfg.get("partition") or {}).get("scheme")

    @property
    def partition(self) -> str:
        """The run's partition as a label (``Dir(0.5)``), from its summary or else its config."""
        part = (self.summary or {}).get("partition") or read_config(self.path).get("partition") or {}
        return partition_label(part)

    @property
    def strategy(self) -> str:
        """The run's strategy name, from its summary or else its config."""
        return str(
            (self.summary or {}).get("strategy") or (read_config(self.path).get("strategy") or {}).get("name") or "?"
        )

    def value(self, key: str) -> Any:
        """A summary.json value (None when absent or the run has no summary)."""
        return (self.summary or {}).get(key)

    @property
    def diverged(self) -> bool:
        """Whether the run's training diverged (summary.json's status, or its diverged_round)."""
        return self.status == "diverged" or self.value("diverged_round") is not None

    @property
    def diverged_round(self) -> int | None:
        """The round the run diverged in (None when it did not)."""
        v = self.value("diverged_round")
        return int(v) if v is not None else None


@dataclass
class SweepView:
    """A sweep as the report sees it: its factors (table rows and columns) and its runs."""

    name: str
    factors: list[Factor]
    runs: list[RunInfo]
    seeds: list[int] | None
    tune: list[str]


def read_json_or_none(path: Path) -> dict | None:
    """A JSON object file, or None when it is missing or damaged (a sweep's report goes on)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_config(run_dir: Path) -> dict:
    """A run's config.yaml as a tree, or {} when it is missing or unreadable."""
    try:
        return yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return {}


def is_run_dir(path: Path) -> bool:
    """A directory with a config and at least one round's records or a summary."""
    return (path / "config.yaml").exists() and ((path / "metrics.jsonl").exists() or (path / "summary.json").exists())


def is_done(summary: dict | None) -> bool:
    """Whether a summary.json says the run has ended (finished or diverged)."""
    return bool(summary) and summary.get("status") in DONE


def load_sweep(sweep_dir: Path) -> SweepView:
    """The runs of a sweep directory, from ``sweep.json`` or from the run directories."""
    index = read_json_or_none(sweep_dir / INDEX_FILE)
    if index and index.get("runs") is not None:
        return _indexed_sweep(sweep_dir, index)
    return _folder_of_runs(sweep_dir)


def _indexed_sweep(sweep_dir: Path, index: dict) -> SweepView:
    """A sweep as its index ``sweep.json`` lists it (the grid and final runs; not the
    cross-validation folds, whose results are selection.md's)."""
    folds = index.get("folds") or 0
    tune = list(index.get("tune") or [])
    runs = []
    for r in index["runs"]:
        if r.get("phase", "grid") == "cv":
            continue
        path = sweep_dir / r["name"]
        summary = read_json_or_none(path / "summary.json")
        status = summary["status"] if is_done(summary) else ("failed" if r.get("status") == "failed" else "missing")
        runs.append(
            RunInfo(r["name"], path, dict(r.get("factors") or {}), r.get("seed"), status, r.get("error"), summary)
        )
    factors = []
    for f in index.get("factors") or []:
        if folds and f["key"] in tune:
            continue  # the chosen value is part of the setting, not a factor of the table
        factors.append(Factor(f["key"], f.get("short", f["key"]), tuple(Setting(lbl, {}) for lbl in f["labels"])))
    return SweepView(index.get("name") or sweep_dir.name, factors, runs, index.get("seeds"), tune)


def _folder_of_runs(sweep_dir: Path) -> SweepView:
    """A plain folder of run directories, grouped by strategy, partition and compressor."""
    runs = [_run_of_dir(sub) for sub in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and is_run_dir(p))]
    if not runs:
        raise RunDirError(
            f"'{sweep_dir}' is neither a run directory nor a sweep directory (no sweep.json and no run directories)"
        )
    factors = []
    for key, short in (("strategy.name", "strategy"), ("partition", "partition"), ("comm.compressor", "compressor")):
        labels: list[str] = []
        for r in runs:
            if r.factors[key] not in labels:
                labels.append(r.factors[key])
        if key == "partition" and "iid" in labels:
            labels.remove("iid")
            labels.insert(0, "iid")
        if len(labels) > 1:  # a factor only where the runs differ in it
            factors.append(Factor(key, short, tuple(Setting(lbl, {}) for lbl in labels)))
    keys = {f.key for f in factors}
    for r in runs:
        r.factors = {k: v for k, v in r.factors.items() if k in keys}
    seeds = sorted({r.seed for r in runs if r.seed is not None}) or None
    return SweepView(sweep_dir.name, factors, runs, seeds, [])


def _run_of_dir(sub: Path) -> RunInfo:
    """A run directory of a plain folder, its strategy, partition and compressor as its factors."""
    summary = read_json_or_none(sub / "summary.json")
    cfg = read_config(sub)
    strategy = (summary or {}).get("strategy") or (cfg.get("strategy") or {}).get("name") or "?"
    part = (summary or {}).get("partition") or cfg.get("partition") or {}
    seed = (summary or {}).get("seed", cfg.get("seed"))
    status = summary["status"] if is_done(summary) else "missing"
    codec = str((cfg.get("comm") or {}).get("compressor") or "none")
    factors = {"strategy.name": str(strategy), "partition": partition_label(part), "comm.compressor": codec}
    return RunInfo(sub.name, sub, factors, seed, status, None, summary)


# -------------------------------------------------------------------- layout


def _series_factor(view: SweepView) -> Factor | None:
    """The lines of the figures: the strategy factor, else the first factor."""
    strat = next((f for f in view.factors if f.key in STRATEGY_FACTORS), None)
    if strat is not None:
        return strat
    return view.factors[0] if view.factors else None


def partition_factors(view: SweepView) -> list[Factor]:
    """The factors that set the partition (the ``partition`` section or ``partition.*`` keys)."""
    return [f for f in view.factors if f.key == "partition" or f.key.startswith("partition.")]


def combo_label(combo: Sequence[str]) -> str:
    """``iid / fedavg`` for a combination of factor labels; ``all`` for none."""
    return " / ".join(combo) if combo else "all"


@dataclass
class Layout:
    """Lines (series) and panels of the sweep figures."""

    series: Factor | None
    panels: list[Factor]

    def series_labels(self, view: SweepView) -> list[str]:
        """The lines' labels in grid order (without a series factor: the strategies run)."""
        if self.series is None:
            labels = []
            for r in view.runs:
                s = str(r.value("strategy") or "run")
                if s not in labels:
                    labels.append(s)
            return labels or ["run"]
        return self.series.labels

    def series_of(self, r: RunInfo) -> str:
        """The line a run belongs to."""
        return r.factors.get(self.series.key, "?") if self.series is not None else str(r.value("strategy") or "run")

    def panel_combos(self) -> list[tuple[str, ...]]:
        """Every panel's combination of labels, in grid order."""
        return list(itertools.product(*[f.labels for f in self.panels]))

    def panel_of(self, r: RunInfo) -> tuple[str, ...]:
        """The panel a run belongs to."""
        return tuple(r.factors.get(f.key, "?") for f in self.panels)


def layout_of(view: SweepView) -> Layout:
    """Lines = the series factor; panels = every other factor (one panel for an ablation)."""
    series = _series_factor(view)
    if series is not None and series.key not in STRATEGY_FACTORS and len(view.factors) == 1:
        return Layout(series, [])  # an ablation: one panel, one line per value
    return Layout(series, [f for f in view.factors if f is not series])


def finished_runs(view: SweepView) -> list[RunInfo]:
    """The runs that ended (finished or diverged): the ones with results to show; every
    table and figure marks the diverged ones (:attr:`RunInfo.diverged`)."""
    return [r for r in view.runs if r.status in DONE]
