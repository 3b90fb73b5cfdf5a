"""Running a study's trials: ask in this process, run in workers, tell the result.

The parent process asks Optuna for every trial (so a study has exactly ``n_trials``,
and the sampler is seeded per trial from ``(seed, "tune-sampler", number)``: with one
worker a study repeats exactly, across a kill and ``--resume`` too), runs it in this
process (``workers=1``) or in a spawned worker, and tells Optuna how it ended. A trial
is one fedsim run (``trials/trial-NNNN``), or K runs with ``folds: K``
(``trials/trial-NNNN-foldI``); each round's validation value is reported to the trial
(step = the round; ``fold x rounds + round`` with folds), and the pruner may stop it.
A trial killed with the study is still RUNNING in the storage: ``--resume`` continues
it in its own directory from its last checkpoint. Pool workers die with the parent.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.api import run
from fedsim.rundir.store import read_jsonl
from fedsim.server.app import RunHooks
from fedsim.trackers import TrackingContext
from fedsim.tuning.spec import PRUNERS, SAMPLERS, TuneSpec
from fedsim.util.formatting import one_line_error
from fedsim.util.lifecycle import run_pool_args, stop_pool
from fedsim.util.seeding import derive

log = logging.getLogger(__name__)


class TrialPruned(Exception):
    """Raised from a run's round hook when the pruner stops its trial."""

    #: the run's trackers end it as killed, not failed (fedsim.server.recorder)
    tracker_status = "killed"


def make_sampler(spec: TuneSpec, number: int):
    """The study's sampler for trial ``number``, seeded from ``(seed, "tune-sampler", number)``."""
    import optuna

    name, kwargs = spec.sampler
    cls = getattr(optuna.samplers, SAMPLERS[name])
    return cls(**kwargs, seed=derive(spec.seed, "tune-sampler", number) % 2**32)


def make_pruner(spec: TuneSpec):
    import optuna

    name, kwargs = spec.pruner
    return getattr(optuna.pruners, PRUNERS[name])(**kwargs)


def storage_url(tune_dir: Path) -> str:
    return f"sqlite:///{(Path(tune_dir) / 'study.db').resolve()}"


def open_storage(url: str):
    """Optuna's RDB storage on SQLite; writers wait up to a minute for each other's locks."""
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


@dataclass
class TrialJob:
    """One trial's work: its runs (a config, a directory, the step offset of its rounds)."""

    number: int
    trial_id: int
    params: dict[str, Any]
    runs: list[tuple[dict, str, int]]
    tracking: list[TrackingContext | None]
    storage: str
    study_name: str
    spec: TuneSpec
    metric: str  # the row key reported each round
    result: dict = field(default_factory=dict)


def last_value(rows: list[Mapping[str, Any]], key: str) -> float | None:
    """The last finite value of ``key`` in a run's rows (its final model's score)."""
    for row in reversed(rows):
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
    return None


def run_trial(job: TrialJob) -> dict[str, Any]:
    """Run a trial's runs, reporting each round to Optuna; never raises (the result says
    ``complete`` with its value, ``pruned`` with the step, or ``failed`` with the error)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(job.storage)
    study = optuna.load_study(study_name=job.study_name, storage=storage, pruner=make_pruner(job.spec))
    trial = optuna.trial.Trial(study, job.trial_id)
    # a continued trial (killed with the study) keeps the values it reported before
    reported = set(storage.get_trial(job.trial_id).intermediate_values)
    pruned: list[int] = []
    values = []
    for (config, run_dir, offset), tracking in zip(job.runs, job.tracking):

        def report(row: dict, offset: int = offset) -> None:
            value = row.get(job.metric)
            step = offset + int(row["round"])
            if value is not None and not row.get("aborted") and step not in reported:
                trial.report(float(value), step)
                reported.add(step)

        def on_start(start_round: int, rounds: int, run_dir: str = run_dir) -> None:
            # a resumed run: the rounds up to its checkpoint that a kill kept from Optuna
            for row in read_jsonl(Path(run_dir) / "metrics.jsonl"):
                if row["round"] < start_round:
                    report(row)

        def on_round(row: dict, offset: int = offset) -> None:
            report(row)
            if trial.should_prune():
                step = offset + int(row["round"])
                pruned.append(step)
                raise TrialPruned(f"pruned at step {step}")

        resume = Path(run_dir).is_dir() and any(Path(run_dir).iterdir())
        try:
            hooks = RunHooks(on_start=on_start, on_round=on_round)
            result = run(config, out=run_dir, resume=resume, hooks=hooks, tracking=tracking)
        except Exception as exc:  # the pruner's stop, or any failure of the run: the trial's, not the study's
            if pruned:
                return {"status": "pruned", "step": pruned[0]}
            return {"status": "failed", "error": one_line_error(exc), "traceback": traceback.format_exc()}
        value = last_value(result.history, job.metric)
        if value is None:
            return {"status": "failed", "error": f"the run in '{run_dir}' reports no {job.metric}"}
        values.append(value)
    return {"status": "complete", "value": sum(values) / len(values)}


def execute_trials(next_job: Callable[[], TrialJob | None], finish: Callable[[TrialJob], None], workers: int) -> None:
    """Run jobs from ``next_job`` (None: no more) ``workers`` at a time; ``finish`` gets
    each with its ``result`` (in this process: it tells Optuna and writes the index)."""
    if workers <= 1:
        while (job := next_job()) is not None:
            job.result = run_trial(job)
            finish(job)
        return
    with ProcessPoolExecutor(**run_pool_args(workers)) as pool:
        pending: dict[Future, TrialJob] = {}
        try:
            while True:
                while len(pending) < workers and (job := next_job()) is not None:
                    pending[pool.submit(run_trial, job)] = job
                if not pending:
                    break
                done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = pending.pop(fut)
                    try:
                        job.result = fut.result()
                    except Exception as exc:  # the worker process died (memory, signal)
                        job.result = {"status": "failed", "error": one_line_error(exc)}
                    finish(job)
        except BaseException:
            # a stopped tune (Ctrl-C, SIGTERM) stops its running trials now: they continue
            # from their checkpoints on --resume
            stop_pool(pool)
            raise
