"""The Python API: ``fedsim.run(config, overrides=(), out=None) -> RunResult``.

The one way of a run: the config is loaded and validated once; the run directory is
checked, locked and prepared once (:func:`fedsim.prepare.preflight.open_run`); the engine
chosen from the registry gets the validated config object and returns what the run
produced.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import strategies
from fedsim.config.load import load_config
from fedsim.engine import get_engine
from fedsim.errors import FedsimError, RunDirError
from fedsim.inputs.run_inputs import RunSettings
from fedsim.prepare.preflight import open_run
from fedsim.prepare.resume import saved_config
from fedsim.rundir import ownership as rundir
from fedsim.rundir.store import RunStore, read_json, read_jsonl
from fedsim.schema.experiment import ExperimentConfig
from fedsim.schema.identity import config_diff
from fedsim.server.app import RunHooks
from fedsim.trackers import TrackingContext
from fedsim.util.flower_logs import quiet_flower

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run produced (or, with ``note``, why nothing ran)."""

    summary: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path
    config: ExperimentConfig
    #: set when nothing ran: why ("already finished after 10 rounds")
    note: str | None = None

    @property
    def test_accuracy(self) -> float | None:
        return self.summary.get("test_accuracy")


#: where runs without ``--out`` go, under the working directory
RUNS = Path("runs")


def run_name_prefix(cfg: ExperimentConfig) -> str:
    """``<dataset>-<scheme>-<strategy>-s<seed>``: a default run directory's name before its time."""
    return f"{cfg.data.dataset}-{cfg.partition.scheme}-{cfg.strategy.name}-s{cfg.seed}"


def default_run_dir(cfg: ExperimentConfig) -> Path:
    """``runs/<dataset>-<scheme>-<strategy>-s<seed>-<time>`` under the working directory."""
    return RUNS / f"{run_name_prefix(cfg)}-{time.strftime('%Y%m%d-%H%M%S')}"


def _unfinished(store: RunStore, cfg: ExperimentConfig) -> bool | None:
    """Whether the run in ``store`` is ``cfg``'s and has more to do (None: not ``cfg``'s).

    ``cfg``'s: the same identity as :func:`fedsim.prepare.resume.check_resume` asks of a
    resume (federation.rounds, placement and tolerances may differ). More to do: no
    summary yet, or one that finished fewer rounds than ``cfg`` asks for (a diverged run
    or one stopped at its privacy budget has ended)."""
    try:
        saved = load_config(store.config)
    except (FedsimError, OSError):
        return None
    if config_diff(saved, cfg):
        return None
    if not store.summary.exists():
        return True
    try:
        summary = read_json(store.summary, "summary")
    except FedsimError:
        return True  # a damaged summary: the checkpoint decides, as with --out
    return (
        summary.get("status") in ("finished", "budget")  # a byte budget may be raised
        and not summary.get("privacy_stop")
        and int(summary.get("rounds") or 0) < cfg.federation.rounds
    )


def newest_unfinished_run(cfg: ExperimentConfig, root: Path = RUNS) -> Path:
    """The newest run of ``cfg`` under ``root`` (``runs/``) that has more to do: what
    ``--resume`` without ``--out`` continues. RunDirError (one line) when there is none:
    a resume never silently starts over."""
    prefix = run_name_prefix(cfg)
    named = re.compile(re.escape(prefix) + r"-\d{8}-\d{6}")
    found = (
        sorted((p for p in root.iterdir() if p.is_dir() and named.fullmatch(p.name)), reverse=True)
        if root.is_dir()
        else []
    )
    ended = []
    for path in found:  # newest first: the time in the name sorts
        marker = rundir.read_marker(path)
        if marker is None or marker.get("kind", "run") != "run" or not (path / "config.yaml").exists():
            continue
        mine = _unfinished(RunStore(path), cfg)
        if mine:
            return path
        if mine is False:
            ended.append(path)
    seen = f"; its newest ended run is '{ended[0]}'" if ended else ""
    raise RunDirError(
        f"--resume without --out: no unfinished run of this config in '{root}' (named {prefix}-<time>){seen}; "
        "give the run directory with --out, or leave out --resume to start a new run"
    )


def resolve_run_dir(
    cfg: ExperimentConfig, out: str | Path | None, resume: bool, overwrite: bool = False
) -> tuple[Path, bool]:
    """The run directory of a run, and whether ``resume`` chose it (no ``out``: the
    newest unfinished run of the config, :func:`newest_unfinished_run`). ``resume`` and
    ``overwrite`` together are refused: one continues a run, the other deletes it, and
    fedsim must never pick a directory to delete."""
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite contradict each other (continue a run, or replace it); give one")
    if out is not None:
        return Path(out), False
    if resume:
        return newest_unfinished_run(cfg), True
    return default_run_dir(cfg), False


def load_result(run_dir: str | Path, note: str | None = None) -> RunResult:
    """A finished run's result, read from its directory."""
    store = RunStore(run_dir)
    if not store.summary.exists():
        raise RunDirError(f"'{run_dir}' holds no summary.json: the run has not finished")
    summary = read_json(store.summary, "summary")
    return RunResult(summary, read_jsonl(store.metrics, "metrics"), store.root, saved_config(store), note)


def run(
    config: Any = None,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    hooks: RunHooks | None = None,
    tracking: TrackingContext | None = None,
) -> RunResult:
    """Run one federated experiment and return its summary and history.

    ``config`` is a YAML path, a mapping or an ExperimentConfig; ``overrides`` are
    dotted ``key=value`` strings. ``out`` is the run directory (default
    ``runs/<dataset>-<scheme>-<strategy>-s<seed>-<time>``; an existing non-empty one
    needs ``resume`` or ``overwrite``); ``resume`` without ``out`` continues the newest
    unfinished run of the config in ``runs/`` or raises RunDirError, never starting a
    new one. ``tracking`` places the run in a sweep's or tune's trackers (set by them;
    see :mod:`fedsim.trackers`).
    """
    cfg = load_config(config, overrides)
    quiet_flower()
    run_dir, chosen = resolve_run_dir(cfg, out, resume, overwrite)
    if chosen:
        log.info("--resume without --out: continuing the newest unfinished run of this config, '%s'", run_dir)
    with open_run(cfg, run_dir, resume=resume, overwrite=overwrite) as opened:
        if opened.done is not None:
            log.info("run in '%s' %s", run_dir, opened.done)
            return load_result(run_dir, opened.done)
        if hooks is not None and hooks.on_open is not None:
            hooks.on_open(run_dir)
        if hooks is not None and hooks.on_note is not None:
            for line in strategies.resolve(cfg)[1]:  # what the config decided (a robust rule's f)
                hooks.on_note(line)
        outcome = get_engine(cfg.engine.name)(RunSettings(cfg, str(run_dir.resolve()), resume, tracking), hooks)
    return RunResult(outcome.summary, outcome.history, run_dir, cfg)
