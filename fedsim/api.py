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


def quiet_flower() -> None:
    """Flower logs every round at INFO on its own handler; fedsim records rounds itself.

    Its logger is set to WARNING unless fedsim's own logger is at DEBUG.
    """
    if not logging.getLogger("fedsim").isEnabledFor(logging.DEBUG):
        logging.getLogger("flwr").setLevel(logging.WARNING)


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


def check_runnable(cfg: ExperimentConfig, store: RunStore, resume: bool):
    """Everything that can fail on the user's input, before anything is written.

    Loads the dataset (missing files), partitions it (impossible parameters) unless a
    resumed run brings its own dataidxs, and builds the model (a CNN on tabular data).
    """
    from .experiment import compute_dataidxs, load_bundle, resolve_device
    from .models import build_model

    resolve_device(cfg.engine.device)
    if cfg.output.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            from .errors import ConfigError

            raise ConfigError("output.tensorboard: true needs tensorboard: pip install 'fedsim[tensorboard]'")
    bundle = load_bundle(cfg)
    dataidxs = None if (resume and store.dataidxs.exists()) else compute_dataidxs(cfg, bundle)
    build_model(cfg.model, bundle.input_shape, bundle.num_classes)
    return dataidxs


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
    quiet_flower()
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
        if store.summary.exists() and json.loads(store.summary.read_text()).get("status") in ("finished", "diverged"):
            log.info("run in '%s' has already ended; nothing to do", run_dir)
            return load_result(run_dir)
    if cfg.engine.threads > 0:
        torch.set_num_threads(cfg.engine.threads)
    dataidxs = check_runnable(cfg, store, resume)
    store.prepare(resume=resume, overwrite=overwrite)
    prepare_run_dir(cfg, store, plots=cfg.output.plots, dataidxs=dataidxs)
    settings = RunSettings(to_yaml(cfg), str(run_dir.resolve()), resume=resume)
    get_engine(cfg.engine.name)(settings, hooks)
    return load_result(run_dir)
