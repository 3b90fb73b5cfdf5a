"""The Python API: ``fedsim.run(config, overrides=(), out=None) -> RunResult``.

The one way of a run: the config is loaded and validated once; the run directory is
checked, locked and prepared once (:func:`fedsim.preflight.open_run`); the engine
chosen from the registry gets the validated config object and returns what the run
produced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import strategies

from .config import ExperimentConfig, load_config
from .engine import get_engine
from .errors import RunDirError
from .experiment import RunSettings
from .flwr_app import quiet_flower
from .preflight import open_run, saved_config
from .server import RunHooks
from .store import RunStore, read_json, read_jsonl
from .trackers import TrackingContext

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


def default_run_dir(cfg: ExperimentConfig) -> Path:
    """``runs/<dataset>-<scheme>-<strategy>-s<seed>-<time>`` under the working directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.data.dataset}-{cfg.partition.scheme}-{cfg.strategy.name}-s{cfg.seed}-{stamp}"


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
    needs ``resume`` or ``overwrite``). ``tracking`` places the run in a sweep's or
    tune's trackers (set by them; see :mod:`fedsim.trackers`).
    """
    cfg = load_config(config, overrides)
    quiet_flower()
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
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
