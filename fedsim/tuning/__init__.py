"""Hyperparameter tuning with Optuna under honest selection: :func:`tune` (``fedsim.tune``;
the package is ``fedsim.tuning``).

``tune(file)`` parses the tune file and validates the corners of its space
(:mod:`.spec`), claims and locks the tune directory (:mod:`fedsim.rundir.ownership`, kind
``tune``), runs the study's trials (:mod:`.trials`: Optuna's seeded sampler, a pruner
on the per-round validation value, the study in ``study.db``), chooses the best trial
by validation alone, retrains the chosen setting on all the training data with the
file's ``seeds`` (a sweep in ``final/``) and tests it once, and writes ``tune.md``,
``trials.csv`` and Optuna's figures (:mod:`.report`).

The tune directory::

    study.db      the Optuna study (SQLite): --resume continues it
    tune.json     the index: the tune file, every trial (state, parameters, value, runs)
    trials/       one run directory per trial (per fold with K-fold)
    final/        the chosen setting's runs on all the training data (a sweep directory)
    tune.md, trials.csv, figures/   the report
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsim.errors import ConfigError, RunDirError
from fedsim.rundir import ownership as rundir
from fedsim.rundir.store import atomic_write_json, atomic_write_text
from fedsim.schema.experiment import ExperimentConfig
from fedsim.schema.identity import to_dict
from fedsim.sweeps import mean_std, safe_name, sweep
from fedsim.sweeps.spec import default_label
from fedsim.trackers import GroupTracking, TrackingContext, chosen
from fedsim.tuning.report import trials_csv, tune_markdown, write_figures
from fedsim.tuning.spec import SpaceParam, TuneSpec, check_space, final_overrides, parse_tune, trial_config
from fedsim.tuning.trials import TrialJob, execute_trials, make_pruner, make_sampler, open_storage, storage_url

__all__ = ["SpaceParam", "TuneResult", "TuneSpec", "parse_tune", "tune"]

log = logging.getLogger(__name__)

INDEX_FILE = "tune.json"


@dataclass
class TuneResult:
    """What a tune left in its directory."""

    tune_dir: Path
    best_params: dict[str, Any] | None
    best_value: float | None
    best_number: int | None
    test_mean: float | None
    test_std: float | None
    trials: list[dict]
    markdown: str
    n_final_failed: int = 0
    wall_time_s: float = 0.0

    def count(self, state: str) -> int:
        """How many trials ended in ``state`` (``COMPLETE``, ``PRUNED``, ``FAIL``)."""
        return sum(t["state"] == state for t in self.trials)


def require_optuna() -> None:
    """Fail with the install hint before anything is written when Optuna is missing."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError("fedsim tune needs Optuna: pip install 'fedsim[tune]'") from None


def tune(
    tune_file_or_mapping: str | os.PathLike | Mapping[str, Any],
    out: str | os.PathLike | None = None,
    workers: int = 1,
    resume: bool = False,
    progress: bool = False,
    on_trial: Callable[[dict], None] | None = None,
) -> TuneResult:
    """Run a tune file's study, choose by validation, retrain and test the choice once.

    ``workers`` trials run at once, each in a spawned process (a script calling this
    with ``workers > 1`` needs the ``if __name__ == "__main__":`` guard). ``resume``
    continues the study in ``out``: finished trials are kept, a trial that was running
    continues from its last checkpoint, and ``n_trials`` may be raised. ``on_trial``
    gets each trial's entry of ``tune.json`` as it ends; ``progress`` shows the final
    runs' progress display.
    """
    t0 = time.perf_counter()
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1, got {workers!r}")
    require_optuna()
    spec = parse_tune(tune_file_or_mapping)
    cfg = check_space(spec)  # every corner validated before anything is written
    tune_dir = Path(out) if out is not None else Path("runs") / f"tune-{safe_name(spec.name)}"
    rundir.claim(tune_dir, "tune", resume=resume, overwrite=False, check_only=True)
    with rundir.DirLock(tune_dir, "tune"):
        rundir.claim(tune_dir, "tune", resume=resume, overwrite=False)
        index = _open_index(tune_dir, spec)
        return _tune_in(spec, cfg, tune_dir, index, workers, progress, on_trial, t0)


def _open_index(tune_dir: Path, spec: TuneSpec) -> dict:
    """``tune.json``: new, or the one a resume continues (its tune file must be the same)."""
    path = tune_dir / INDEX_FILE
    if path.exists():
        try:
            index = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RunDirError(f"'{path}' is not readable JSON ({type(exc).__name__}); cannot resume") from exc
        old = index.get("identity")
        new = json.loads(json.dumps(spec.identity()))
        if old != new:
            diff = sorted(k for k in set(old or {}) | set(new) if (old or {}).get(k) != new.get(k))
            raise RunDirError(
                f"--resume: the tune file differs from the one '{tune_dir}' was started with in {', '.join(diff)}; "
                "resume with the same file (n_trials and seeds may change)"
            )
    else:
        index = {"version": 1, "identity": spec.identity(), "trials": []}
    index.update({"name": spec.name, "tune_file": spec.source, "n_trials": spec.n_trials, "seeds": spec.seeds})
    return index


def _tune_in(
    spec: TuneSpec,
    cfg: ExperimentConfig,
    tune_dir: Path,
    index: dict,
    workers: int,
    progress: bool,
    on_trial: Callable[[dict], None] | None,
    t0: float,
) -> TuneResult:
    """The tune's work in its claimed and locked directory: the trials, the choice, the
    chosen setting retrained and tested, the report."""
    study = _Study.open(spec, cfg, tune_dir, index, on_trial)
    study.write_index()
    execute_trials(study.next_job, study.finish, workers)
    # selection: validation only, then the chosen setting on all data, tested once
    best, final, n_final_failed = _choose_and_test(study, cfg, workers, progress)
    index["best"], index["final"] = best, final
    study.write_index()
    trials = study.trials()
    notes = write_figures(study.study, tune_dir / "figures")
    md = tune_markdown(spec, trials, best, final, notes)
    atomic_write_text(tune_dir / "tune.md", md)
    atomic_write_text(tune_dir / "trials.csv", trials_csv(trials, spec))
    if study.group is not None:
        _finish_group(study.group, tune_dir, notes, best, final)
    return TuneResult(
        tune_dir,
        best["params"] if best else None,
        best["value"] if best else None,
        best["number"] if best else None,
        final["test_mean"] if final else None,
        final["test_std"] if final else None,
        trials,
        md,
        n_final_failed,
        time.perf_counter() - t0,
    )


@dataclass
class _Study:
    """A tune's Optuna study and its index ``tune.json``: it asks for the next trial (or
    continues one a stopped tune left running), and tells each result to Optuna, the
    index and ``on_trial`` as the trial ends."""

    spec: TuneSpec
    tune_dir: Path
    index: dict
    study: Any  # optuna.Study
    url: str
    group: GroupTracking | None
    on_trial: Callable[[dict], None] | None
    #: tune.json's entry of every trial, by number
    entries: dict[int, dict]
    #: trials this directory started that were running when the tune was stopped
    todo: list

    @classmethod
    def open(
        cls,
        spec: TuneSpec,
        cfg: ExperimentConfig,
        tune_dir: Path,
        index: dict,
        on_trial: Callable[[dict], None] | None,
    ) -> _Study:
        """The study in ``study.db`` (new or resumed), with the trials a kill left RUNNING
        sorted out: continued where this directory has their entry, failed where not."""
        import optuna
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = storage_url(tune_dir)
        study = optuna.create_study(
            study_name=spec.name,
            storage=open_storage(url),
            direction="minimize" if spec.minimize else "maximize",
            load_if_exists=True,
            pruner=make_pruner(spec),
        )
        existing = study.get_trials(deepcopy=False)
        if len(existing) > spec.n_trials:
            raise RunDirError(
                f"--resume: the study in '{tune_dir}' has {len(existing)} trials, more than n_trials = {spec.n_trials}; "
                "n_trials can be raised, not lowered"
            )
        group = None
        if chosen(cfg.output):
            params = {f"space.{p.key}": p.describe() for p in spec.space} | {"n_trials": spec.n_trials}
            group = GroupTracking(tune_dir, "tune", spec.name, cfg.output, None, params)
        entries = {t["number"]: t for t in index["trials"]}
        todo = [t for t in existing if t.state == TrialState.RUNNING and t.number in entries]
        for t in existing:  # asked, then killed before its entry was written: it never ran
            if t.state == TrialState.RUNNING and t.number not in entries:
                study.tell(t.number, state=TrialState.FAIL)
        return cls(spec, tune_dir, index, study, url, group, on_trial, entries, todo)

    def trials(self) -> list[dict]:
        """Every trial's entry, by number."""
        return [self.entries[n] for n in sorted(self.entries)]

    def write_index(self) -> None:
        """``tune.json`` with every trial's entry as it stands."""
        self.index["trials"] = self.trials()
        atomic_write_json(self.tune_dir / INDEX_FILE, self.index)

    def next_job(self) -> TrialJob | None:
        """The next trial to run: an interrupted one first, then a new one (None: n_trials reached)."""
        if self.todo:
            t = self.todo.pop(0)
            log.info("continuing trial %d (it was running when the tune stopped)", t.number)
            return self._job(t.number, t._trial_id, dict(t.params))
        if len(self.study.get_trials(deepcopy=False)) >= self.spec.n_trials:
            return None
        number = len(self.study.get_trials(deepcopy=False))
        self.study.sampler = make_sampler(self.spec, number)
        trial = self.study.ask({p.key: p.distribution() for p in self.spec.space})
        return self._job(trial.number, trial._trial_id, dict(trial.params))

    def _job(self, trial_number: int, trial_id: int, params: dict) -> TrialJob:
        """A trial's runs (one, or one per fold), its entry marked RUNNING in the index."""
        spec = self.spec
        runs, contexts = [], []
        for fold in range(spec.folds) if spec.folds else [None]:
            name = f"trial-{trial_number:04d}" + (f"-fold{fold}" if fold is not None else "")
            config = trial_config(spec, params, fold)
            offset = (fold or 0) * config.federation.rounds
            runs.append((to_dict(config), str(self.tune_dir / "trials" / name), offset))
            tags = (("fedsim.trial", str(trial_number)),)
            contexts.append(self.group.context_for(name, "trial", tags) if self.group else None)
        entry = self.entries.setdefault(trial_number, {"number": trial_number})
        entry.update({"state": "RUNNING", "params": params, "runs": [f"trials/{Path(r[1]).name}" for r in runs]})
        self.write_index()
        metric = ("test_" + spec.select_by[4:]) if spec.folds else spec.select_by
        return TrialJob(trial_number, trial_id, params, runs, contexts, self.url, spec.name, spec, metric)

    def finish(self, job: TrialJob) -> None:
        """Tell Optuna how a trial ended, and record it in the index and to ``on_trial``."""
        from optuna.trial import TrialState

        res = job.result
        if res["status"] == "complete":
            self.study.tell(job.number, res["value"])
        elif res["status"] == "pruned":
            self.study.tell(job.number, state=TrialState.PRUNED)
        else:
            self.study.tell(job.number, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", job.number, res.get("error"))
        frozen = self.study.get_trials(deepcopy=False)[job.number]
        entry = self.entries[job.number]
        entry.update(
            {
                "state": frozen.state.name,
                "value": frozen.value,
                "pruned_step": res.get("step"),
                "error": res.get("error"),
                "traceback": res.get("traceback"),
            }
        )
        self.write_index()
        if self.on_trial is not None:
            self.on_trial(entry)


def _choose_and_test(
    study: _Study, cfg: ExperimentConfig, workers: int, progress: bool
) -> tuple[dict | None, dict | None, int]:
    """(best, final, runs of the final sweep that failed): the best complete trial by its
    validation value alone, and its setting retrained on all the training data with the
    file's seeds and tested once (a sweep in ``final/``); (None, None, 0) when no trial
    completed."""
    from optuna.trial import TrialState

    spec = study.spec
    if not any(t.state == TrialState.COMPLETE for t in study.study.get_trials(deepcopy=False)):
        return None, None, 0
    bt = study.study.best_trial
    best = {"number": bt.number, "params": dict(bt.params), "value": bt.value}
    chosen_cfg = trial_config(spec, bt.params, 0 if spec.folds else None)
    seeds = spec.seeds or [cfg.seed]
    final_spec = {
        "name": f"{spec.name}-final",
        "base": spec.base,
        "overrides": [*spec.overrides, *final_overrides(spec, chosen_cfg.federation.rounds)],
        "grid": {k: [v] for k, v in bt.params.items()},
        "seeds": seeds,
    }
    final_dir = study.tune_dir / "final"
    parent = None
    if study.group is not None:
        g = study.group
        parent = TrackingContext(g.context.mlflow_uri, g.run_id, g.context.group, "final", None, g.context.tags)
    result = sweep(
        final_spec,
        out=final_dir,
        workers=workers,
        resume=final_dir.exists() and any(final_dir.iterdir()),
        progress=progress,
        tracking=parent,
    )
    accs = [(r["seed"], r.get("test_accuracy")) for r in result.rows]
    m, sd, _ = mean_std(a for _, a in accs)
    final = {
        "dir": "final",
        "seeds": seeds,
        "per_seed": accs,
        "diverged": [r["seed"] for r in result.rows if r.get("status") == "diverged"],
        "test_mean": m,
        "test_std": sd,
        "what": "no held-out fold" if spec.folds else "no validation split",
        "rounds": chosen_cfg.federation.rounds,
        "grid_label": default_label(best["params"]),
    }
    return best, final, result.n_failed


def _finish_group(
    group: GroupTracking, tune_dir: Path, notes: dict[str, str], best: dict | None, final: dict | None
) -> None:
    """The tune's report files and its headline numbers into its trackers' group run."""
    files = [tune_dir / n for n in ("tune.md", "trials.csv", INDEX_FILE)] + [
        tune_dir / "figures" / f for f, note in notes.items() if not note
    ]
    metrics = {"best_value": best["value"] if best else None}
    if final is not None:
        metrics |= {"test_accuracy_mean": final["test_mean"], "test_accuracy_std": final["test_std"]}
    group.finish(files, metrics)
