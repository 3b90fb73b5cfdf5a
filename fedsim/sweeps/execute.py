"""Running a sweep's planned runs: in this process or in a spawn pool, with a rich
progress display, recording every run's status in the sweep's index ``sweep.json``.

A run that has already ended (``summary.json`` with a status in :data:`DONE` and the
planned number of rounds) is skipped; one that started is resumed from its last
checkpoint. A failing run is recorded (status ``failed`` and a one-line error) and the
others go on. Pool workers die with the sweep (:mod:`fedsim.util.lifecycle`).
"""

from __future__ import annotations

import json
import logging
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsim.config.load import load_config
from fedsim.rundir.store import atomic_write_json
from fedsim.schema.identity import config_hash
from fedsim.sweeps.spec import PlannedRun, SweepSpec
from fedsim.sweeps.tables import DONE
from fedsim.trackers import GroupTracking, TrackingContext
from fedsim.util.formatting import one_line_error
from fedsim.util.lifecycle import run_pool_args, stop_pool

log = logging.getLogger(__name__)

INDEX_FILE = "sweep.json"


def _run_one(
    config: dict, run_dir: str, resume: bool, hooks: Any = None, tracking: TrackingContext | None = None
) -> dict:
    """Run one experiment; never raises (the sweep records the failure and goes on)."""
    try:
        # the engine (Flower) loads with the first run: parsing, planning and the tables need none of it
        from fedsim.api import run

        # tracking only when the sweep has trackers: run()'s signature without them is unchanged
        extra = {"tracking": tracking} if tracking is not None else {}
        result = run(config, out=run_dir, resume=resume, hooks=hooks, **extra)
        # the run's own status (finished, diverged): the index and summary.csv say what summary.json says
        return {"status": result.summary.get("status") or "finished", "summary": result.summary}
    except Exception as exc:  # any failure of one run is that run's, not the sweep's
        return {"status": "failed", "error": one_line_error(exc), "traceback": traceback.format_exc()}


class _Display:
    """The sweep's rich progress display (runs done / running / failed / time left)."""

    def __init__(self, enabled: bool, total: int, done: int, title: str) -> None:
        self.enabled = enabled and total > 0
        self.failed = 0
        self.diverged = 0
        if not self.enabled:
            return
        # rich only when a display is shown (the tests and --quiet need none)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

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
            info = f"running {running}  failed {self.failed}" + (f"  diverged {self.diverged}" if self.diverged else "")
            self.progress.update(self.task, completed=done, info=info)

    def run_started(self, name: str) -> Any:
        """RunHooks showing the rounds of an in-process run."""
        if not self.enabled:
            return None
        from fedsim.server.app import RunHooks  # Flower: only when a run starts

        def on_start(start_round: int, rounds: int) -> None:
            if self.round_task is not None:
                self.progress.remove_task(self.round_task)
            self.round_task = self.progress.add_task(f"  {name[:60]}", total=rounds, completed=start_round - 1, info="")

        def on_round(row: dict) -> None:
            if self.round_task is not None:
                acc = row.get("test_accuracy")
                self.progress.update(
                    self.round_task, completed=row["round"], info=f"acc {acc:.4f}" if acc is not None else ""
                )

        return RunHooks(on_start=on_start, on_round=on_round)

    def stop(self) -> None:
        if self.enabled:
            if self.round_task is not None:
                self.progress.remove_task(self.round_task)
            self.progress.stop()


class Index:
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
        """Write the index atomically (called after every run, so a killed sweep leaves it current)."""
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
                    {
                        "name": r.name,
                        "hash": r.hash,
                        "factors": r.factors,
                        "seed": r.seed,
                        "phase": r.phase,
                        "fold": r.fold,
                        "status": r.status,
                        "error": r.error,
                        "traceback": r.traceback,
                    }
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
        log.warning("ignoring '%s': %s", run_dir, one_line_error(exc))
        return None


def assign_dirs(runs: list[PlannedRun], sweep_dir: Path) -> None:
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
    # a run stopped at privacy.target_epsilon has ended with fewer rounds (a run of an
    # older fedsim says so in privacy_stop only)
    if (
        summary.get("status") == "finished"
        and int(summary.get("rounds") or 0) < rounds
        and not summary.get("privacy_stop")
    ):
        return None
    return summary


def execute_runs(
    runs: list[PlannedRun],
    sweep_dir: Path,
    workers: int,
    index: Index,
    display_enabled: bool,
    title: str,
    group: GroupTracking | None = None,
) -> None:
    """Run what is not finished yet: in this process (workers=1) or in a spawn pool;
    ``group`` places each run in the sweep's trackers (its MLflow parent, its W&B group)."""
    todo = _unfinished(runs, sweep_dir)
    done = len(runs) - len(todo)
    if done:
        log.info("%d of %d runs already finished; skipped", done, len(runs))
    index.write()
    progress = _Progress(_Display(display_enabled, len(runs), done, title), index, done, len(runs))
    try:
        if workers <= 1 or len(todo) <= 1:
            _run_here(todo, sweep_dir, progress, group)
        else:
            _run_in_pool(todo, sweep_dir, workers, progress, group)
        progress.display.update(progress.done, 0)
    finally:
        progress.display.stop()
        index.write()


def _unfinished(runs: list[PlannedRun], sweep_dir: Path) -> list[tuple[PlannedRun, bool]]:
    """The runs to run, each with whether it resumes (its directory has files); a run that
    has ended takes its status and summary from its directory and is skipped."""
    todo: list[tuple[PlannedRun, bool]] = []
    for r in runs:
        run_dir = sweep_dir / r.name
        summary = _finished_summary(run_dir, int(r.config["federation"]["rounds"]))
        if summary is not None:
            r.status, r.summary, r.error, r.skipped = summary["status"], summary, None, True
            continue
        todo.append((r, run_dir.is_dir() and any(run_dir.iterdir())))
    return todo


def _tracking(group: GroupTracking | None, r: PlannedRun) -> TrackingContext | None:
    """Where a run goes in the sweep's trackers (None: the sweep has none)."""
    return group.context_for(r.name, r.phase) if group is not None else None


@dataclass
class _Progress:
    """How far the sweep is: the display and the index, both current after each run."""

    display: _Display
    index: Index
    done: int
    total: int

    def record(self, r: PlannedRun, out: dict) -> None:
        """A run has ended: its status, summary and error into the run and the index."""
        self.done += 1
        r.status = out["status"]
        r.summary = out.get("summary")
        r.error = out.get("error")
        r.traceback = out.get("traceback")
        if r.status == "failed":
            self.display.failed += 1
            log.warning("run %s failed: %s", r.name, r.error)
        elif r.status == "diverged":  # the run warned, naming itself; the sweep counts it and lists it at the end
            self.display.diverged += 1
        else:
            acc = (r.summary or {}).get("test_accuracy")
            log.info("run %d/%d finished: %s (test_accuracy %s)", self.done, self.total, r.name, acc)
        self.index.write()


def _run_here(
    todo: list[tuple[PlannedRun, bool]], sweep_dir: Path, progress: _Progress, group: GroupTracking | None
) -> None:
    """The runs one after the other in this process, each showing its rounds."""
    display = progress.display
    for r, resume_it in todo:
        display.update(progress.done, 1)
        hooks = display.run_started(r.name)
        progress.record(r, _run_one(r.config, str(sweep_dir / r.name), resume_it, hooks, _tracking(group, r)))
        display.update(progress.done, 0)


def _run_in_pool(
    todo: list[tuple[PlannedRun, bool]],
    sweep_dir: Path,
    workers: int,
    progress: _Progress,
    group: GroupTracking | None,
) -> None:
    """The runs ``workers`` at a time in spawned processes, each recorded as it ends."""
    with ProcessPoolExecutor(**run_pool_args(workers, min(workers, len(todo)))) as pool:
        pending: dict[Future, PlannedRun] = {
            pool.submit(_run_one, r.config, str(sweep_dir / r.name), resume_it, None, _tracking(group, r)): r
            for r, resume_it in todo
        }
        try:
            while pending:
                progress.display.update(progress.done, min(workers, len(pending)))
                finished, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in finished:
                    r = pending.pop(fut)
                    try:
                        out = fut.result()
                    except Exception as exc:  # the worker process died (memory, signal)
                        out = {"status": "failed", "error": one_line_error(exc), "traceback": traceback.format_exc()}
                    progress.record(r, out)
        except BaseException:
            # a stopped sweep (Ctrl-C, SIGTERM) stops its running runs now, which
            # resume from their checkpoints
            stop_pool(pool)
            raise
