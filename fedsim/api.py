"""The Python API: ``fedsim.run(config, overrides=(), out=None) -> RunResult``."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .config import ExperimentConfig, load_config, to_yaml
from .errors import RunDirError
from .store import RunStore, read_jsonl

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run left in its directory."""

    summary: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path
    config: ExperimentConfig

    @property
    def test_accuracy(self) -> float | None:
        return self.summary.get("test_accuracy")


def default_run_dir(cfg: ExperimentConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.data.dataset}-{cfg.partition.scheme}-{cfg.strategy.name}-s{cfg.seed}-{stamp}"


def load_result(run_dir: str | Path) -> RunResult:
    from .config import load_config as _load

    store = RunStore(run_dir)
    if not store.summary.exists():
        raise RunDirError(f"'{run_dir}' holds no summary.json: the run has not finished")
    summary = json.loads(store.summary.read_text())
    return RunResult(summary, read_jsonl(store.metrics), store.root, _load(store.config))


def run(
    config: Any = None,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    hooks: Any = None,
) -> RunResult:
    """Run one federated experiment and return its summary and history.

    ``config`` is a YAML path, a mapping or an ExperimentConfig; ``overrides`` are
    dotted ``key=value`` strings. ``out`` is the run directory (created; an existing
    non-empty one needs ``resume`` or ``overwrite``).
    """
    from .engine import get_engine
    from .experiment import RunSettings, prepare_run_dir

    cfg = load_config(config, overrides)
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    store = RunStore(run_dir)
    if resume and store.config.exists():
        saved = load_config(store.config)
        from .config import config_hash

        if config_hash(saved) != config_hash(cfg):
            raise RunDirError(
                f"--resume: the config differs from the one '{run_dir}' was started with ({store.config}); "
                "resume with the same config and overrides"
            )
        if store.summary.exists() and json.loads(store.summary.read_text()).get("status") == "finished":
            log.info("run in '%s' has already finished; nothing to do", run_dir)
            return load_result(run_dir)
    store.prepare(resume=resume, overwrite=overwrite)
    if cfg.engine.threads > 0:
        torch.set_num_threads(cfg.engine.threads)
    prepare_run_dir(cfg, store, plots=cfg.output.plots)
    settings = RunSettings(to_yaml(cfg), str(run_dir.resolve()), resume=resume)
    get_engine(cfg.engine.name)(settings, hooks)
    return load_result(run_dir)
