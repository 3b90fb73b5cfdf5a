"""Sweeps: a grid of experiments (strategies x partitions x seeds); the :func:`sweep` API.

``sweep(file)`` parses and plans the sweep (:mod:`.spec`: every config validated before
anything runs), claims and locks the sweep directory (:mod:`fedsim.rundir.ownership`), runs what
is not finished (:mod:`.execute`), optionally selects hyperparameters honestly
(:mod:`.selection`) and writes the tables (:mod:`.tables`).

The sweep directory holds one ordinary run directory per run (named from its
settings, e.g. ``strategy=fedprox__partition=Dir(0.5)__seed=1``), ``sweep.json`` (the
index: config hash -> run directory, status and one-line error of every run),
``summary.csv`` (one row per run) and ``table.md`` (and, with selection,
``selection.md`` and ``selection.csv``).

``fedsim.sweep(...)`` is :func:`sweep` (the package is ``fedsim.sweeps``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsim.config.load import load_config
from fedsim.errors import ConfigError
from fedsim.rundir import ownership as rundir
from fedsim.rundir.store import atomic_write_text
from fedsim.sweeps.attack_tables import attack_table
from fedsim.sweeps.comm_tables import comm_table, per_mb
from fedsim.sweeps.execute import DONE, INDEX_FILE, Index, assign_dirs, execute_runs
from fedsim.sweeps.fairness_tables import fairness_table
from fedsim.sweeps.selection import Choice, minimize_metric, select_settings, selection_outputs
from fedsim.sweeps.spec import (
    STRATEGY_FACTORS,
    Factor,
    PlannedRun,
    Setting,
    SweepSpec,
    combos,
    compose,
    default_label,
    parse_sweep,
    plan_runs,
    plan_sweep,
    safe_name,
)
from fedsim.sweeps.tables import (
    ABLATION_COLUMNS,
    DAGGER_NOTE,
    HETEROGENEITY_COLUMNS,
    METRIC_COLUMNS,
    PARTY_COLUMNS,
    dagger,
    format_mean_std,
    has_result,
    is_diverged,
    make_table,
    mean_std,
    personal_table,
    read_summary_csv,
    summary_row,
    time_columns,
    to_csv,
)
from fedsim.trackers import GroupTracking, TrackingContext, chosen

__all__ = [
    "ABLATION_COLUMNS",
    "DAGGER_NOTE",
    "DONE",
    "HETEROGENEITY_COLUMNS",
    "INDEX_FILE",
    "METRIC_COLUMNS",
    "PARTY_COLUMNS",
    "STRATEGY_FACTORS",
    "Choice",
    "Factor",
    "PlannedRun",
    "Setting",
    "SweepResult",
    "SweepSpec",
    "attack_table",
    "compose",
    "dagger",
    "default_label",
    "format_mean_std",
    "has_result",
    "is_diverged",
    "comm_table",
    "fairness_table",
    "make_table",
    "per_mb",
    "mean_std",
    "minimize_metric",
    "parse_sweep",
    "personal_table",
    "plan_sweep",
    "read_summary_csv",
    "safe_name",
    "select_settings",
    "sweep",
    "time_columns",
]

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """What a sweep left in its directory."""

    sweep_dir: Path
    rows: list[dict[str, Any]]
    table_markdown: str
    #: runs that finished (status ``finished``); diverged runs are counted apart
    n_finished: int
    n_failed: int
    selection: list[Choice] | None = None
    selection_markdown: str | None = None
    wall_time_s: float = 0.0
    #: runs whose training diverged (status ``diverged``): results, marked † in the tables
    n_diverged: int = 0

    @property
    def diverged(self) -> list[dict[str, Any]]:
        """The summary.csv rows of the runs that diverged (run, diverged_round, divergence_reason, ...)."""
        return [r for r in self.rows if r.get("status") == "diverged"]

    @property
    def n_runs(self) -> int:
        """Runs in summary.csv (with cross-validation: fold runs and final runs)."""
        return len(self.rows)


def sweep(
    sweep_file_or_mapping: str | os.PathLike | Mapping[str, Any],
    out: str | os.PathLike | None = None,
    workers: int = 1,
    resume: bool = False,
    select_by: str | None = None,
    folds: int = 0,
    progress: bool = False,
    tracking: TrackingContext | None = None,
) -> SweepResult:
    """Run every experiment of a sweep; write ``summary.csv``, ``table.md`` and ``sweep.json``.

    ``workers`` runs at once, each in a spawned process with ``cpu_count // workers``
    torch threads (``engine.threads`` of the config wins when set). A failing run is
    recorded (status ``failed`` and a one-line error) and the others go on.
    ``resume`` matches runs by config hash: finished ones are skipped, interrupted ones
    continue from their last checkpoint. ``select_by`` (a validation metric such as
    ``val_accuracy``) and ``folds`` do honest model selection over the ``tune`` factors
    (:mod:`fedsim.sweeps.selection`). Tables use the sample std (ddof=1) over seeds.

    Worker processes are started with the ``spawn`` method, which re-imports the
    calling script: a script that calls ``sweep(..., workers>1)`` needs the usual
    ``if __name__ == "__main__":`` guard (the ``fedsim`` command has it).

    With ``output.trackers`` the sweep is a parent MLflow run (in the sweep's
    ``mlflow.db`` unless a store is named) with its runs nested, and a W&B group;
    ``tracking`` nests the sweep itself (a tune's final runs).
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
        _check_select_by(spec, select_by)
    # plan and validate every config before anything runs
    runs, final_plans = _plan_folds(spec, folds) if folds else (_plan_grid(spec, select_by), {})
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError("sweep: two runs get the same directory name; give the grid settings distinct labels")

    sweep_dir = Path(out) if out is not None else Path("runs") / f"sweep-{safe_name(spec.name)}"
    rundir.claim(sweep_dir, "sweep", resume=resume, overwrite=False, check_only=True)
    lock = rundir.DirLock(sweep_dir, "sweep").acquire()
    try:
        rundir.claim(sweep_dir, "sweep", resume=resume, overwrite=False)
        group = _group_tracking(spec, runs, sweep_dir, tracking)
        return _sweep_in(spec, runs, sweep_dir, workers, select_by, folds, progress, final_plans, t0, group)
    finally:
        lock.release()


def _check_select_by(spec: SweepSpec, select_by: str) -> None:
    """Selection needs ``tune`` factors to choose and a validation metric to choose by."""
    if not spec.tune:
        raise ConfigError(
            "--select-by needs 'tune' in the sweep file: the grid factors that are hyperparameters to choose"
        )
    if not select_by.startswith("val_"):
        raise ConfigError(
            f"--select-by '{select_by}' is not a validation metric; choose one such as val_accuracy "
            "(selecting by a test or training metric is not honest model selection)"
        )


def _plan_grid(spec: SweepSpec, select_by: str | None) -> list[PlannedRun]:
    """The grid's runs; selecting by validation, each must evaluate on the parties' held-out data."""
    runs = plan_runs(spec, combos(spec.factors), "grid")
    if select_by is not None:
        bad = next((r for r in runs if r.config["federation"]["fraction_evaluate"] <= 0), None)
        if bad is not None:
            raise ConfigError(
                f"--select-by {select_by} needs local validation: add federation.fraction_evaluate=1.0 and "
                f"data.val_fraction=0.2 (for example) to the sweep's overrides, or use --folds K (run '{bad.name}')"
            )
    return runs


def _plan_folds(spec: SweepSpec, folds: int) -> tuple[list[PlannedRun], dict[tuple, list[PlannedRun]]]:
    """K-fold cross-validation: every grid setting on each fold (``cv/``), and the final
    runs of every setting on all the training data, of which the chosen ones run."""
    fold_runs: list[PlannedRun] = []
    for i in range(folds):
        fold_runs += plan_runs(
            spec, combos(spec.factors), "cv", {"data.cv_folds": folds, "data.cv_fold": i}, fold=i, prefix="cv/"
        )
    candidates = {tuple(s.label for s in combo): combo for combo in combos(spec.factors)}
    final_plans = {
        k: plan_runs(spec, [c], "final", {"data.cv_folds": 0, "data.cv_fold": 0}) for k, c in candidates.items()
    }
    return fold_runs, final_plans


def _group_tracking(
    spec: SweepSpec, runs: list[PlannedRun], sweep_dir: Path, parent: TrackingContext | None
) -> GroupTracking | None:
    """The sweep in the trackers its runs use (None when they use none)."""
    output = load_config(runs[0].config).output if runs else None
    if output is None or not chosen(output):
        return None
    params = {f"grid.{f.key}": ", ".join(f.labels) for f in spec.factors}
    return GroupTracking(sweep_dir, "sweep", spec.name, output, parent, params)


def _sweep_in(
    spec: SweepSpec,
    runs: list[PlannedRun],
    sweep_dir: Path,
    workers: int,
    select_by: str | None,
    folds: int,
    progress: bool,
    final_plans: dict,
    t0: float,
    group: GroupTracking | None = None,
) -> SweepResult:
    """The sweep's work in its claimed and locked directory."""
    index = Index(sweep_dir, spec, {"select_by": select_by, "folds": folds})
    assign_dirs(runs, sweep_dir)
    index.runs = list(runs)
    title = f"sweep {spec.name}" + (" (cross-validation)" if folds else "")
    execute_runs(runs, sweep_dir, workers, index, progress, title, group)

    choices: list[Choice] | None = None
    sel_md = None
    table_runs, table_factors = runs, list(spec.factors)
    if select_by is not None:
        choices = _choose(spec, runs, select_by, folds)
        if folds:  # the chosen settings retrained on all the training data: the tables' runs
            table_runs = _run_chosen(spec, choices, final_plans, runs, sweep_dir, workers, index, progress, group)
            table_factors = [f for f in spec.factors if f.key not in spec.tune]
            runs = runs + table_runs
        _attach_test_results(choices, table_runs)

    rows = [summary_row(r, spec.factors, with_phase=bool(folds)) for r in runs]
    table = _tables(spec, table_runs, table_factors, folds)
    atomic_write_text(sweep_dir / "summary.csv", to_csv(rows))
    atomic_write_text(sweep_dir / "table.md", f"# {spec.name}\n\n" + table)
    if choices is not None:
        sel_md, sel_csv, sel_rows = selection_outputs(choices, spec, select_by or "", folds)
        atomic_write_text(sweep_dir / "selection.md", f"# {spec.name}: model selection\n\n" + sel_md)
        atomic_write_text(sweep_dir / "selection.csv", sel_csv)
        index.selection = sel_rows
    index.write()
    counts = {s: sum(r.status == s for r in runs) for s in ("finished", "diverged", "failed")}
    wall = time.perf_counter() - t0
    if group is not None:
        names = ("table.md", "summary.csv", "selection.md", "selection.csv", INDEX_FILE)
        group.finish([sweep_dir / n for n in names], {f"runs_{s}": n for s, n in counts.items()})
    log.info(
        "sweep %s: %d finished, %d diverged, %d failed in %.1f s (%s)",
        spec.name,
        counts["finished"],
        counts["diverged"],
        counts["failed"],
        wall,
        sweep_dir,
    )
    return SweepResult(
        sweep_dir, rows, table, counts["finished"], counts["failed"], choices, sel_md, wall, counts["diverged"]
    )


def _choose(spec: SweepSpec, runs: list[PlannedRun], select_by: str, folds: int) -> list[Choice]:
    """Honest selection: per group the tune setting with the best validation score; the
    selector sees the factor labels and that score only (with folds: the held-out fold's
    test_* metric, which is validation)."""
    score_key = ("test_" + select_by[len("val_") :]) if folds else select_by
    visible = [{**r.factors, "score": (r.summary or {}).get(score_key)} for r in runs if r.status in DONE]
    if not any(v["score"] is not None for v in visible) and any(r.status in DONE for r in runs):
        raise ConfigError(f"--select-by '{select_by}': no finished run reports it in summary.json")
    group_keys = [f.key for f in spec.factors if f.key not in spec.tune]
    tune_keys = [f.key for f in spec.factors if f.key in spec.tune]
    return select_settings(visible, group_keys, tune_keys, "score", minimize_metric(select_by))


def _run_chosen(
    spec: SweepSpec,
    choices: list[Choice],
    final_plans: dict,
    runs: list[PlannedRun],
    sweep_dir: Path,
    workers: int,
    index: Index,
    progress: bool,
    group: GroupTracking | None,
) -> list[PlannedRun]:
    """Run the final runs of the chosen settings (cross-validation); return them."""
    finals: list[PlannedRun] = []
    for c in choices:
        if c.chosen is None:
            continue
        key = tuple({**c.group, **c.chosen}[f.key] for f in spec.factors)
        finals += final_plans[key]
    assign_dirs(finals, sweep_dir)
    index.runs = runs + finals
    execute_runs(finals, sweep_dir, workers, index, progress, f"sweep {spec.name} (chosen settings)", group)
    return finals


def _attach_test_results(choices: list[Choice], table_runs: list[PlannedRun]) -> None:
    """Each choice's test accuracy over its setting's ended runs (read only now, after choosing)."""
    for c in choices:
        if c.chosen is None:
            continue
        target = {**c.group, **c.chosen}
        members = [r for r in table_runs if r.status in DONE and all(r.factors[k] == v for k, v in target.items())]
        m, sd, n = mean_std((r.summary or {}).get("test_accuracy") for r in members)
        c.test_mean, c.test_std, c.test_n = m, sd, n
        c.test_diverged = sum(r.status == "diverged" for r in members)


def _tables(spec: SweepSpec, table_runs: list[PlannedRun], table_factors: list[Factor], folds: int) -> str:
    """table.md's body: the attacks x defences tables (if any) first, the table of every
    setting, the accuracy on the parties' own test data (if any) and, in a sweep over
    ``comm.*``, every setting's MB and accuracy per MB."""
    table_rows = [summary_row(r, spec.factors, with_phase=False) for r in table_runs]
    extra = "Settings chosen by cross-validation (selection.md)." if folds else ""
    table = make_table(table_rows, table_factors, spec.seeds, extra)
    attacked = attack_table(table_rows, table_factors, spec.seeds)
    if attacked is not None:
        table = attacked + "\n" + table
    personal = personal_table(table_rows, table_factors, spec.seeds)
    if personal:
        table += "\n## Accuracy on the parties' own test data\n\n" + personal
    fair = fairness_table(table_rows, table_factors, spec.seeds)
    if fair:
        table += "\n## Fairness over the parties\n\n" + fair
    # where the sweep varies how updates travel (comm.*): the bytes and the accuracy per MB
    comm = (
        comm_table(table_rows, table_factors, spec.seeds) if any(f.key.startswith("comm") for f in spec.factors) else ""
    )
    if comm:
        table += "\n## Communication\n\n" + comm
    return table
