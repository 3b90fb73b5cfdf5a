"""The Python API: ``fedsim.run(config, overrides=(), out=None) -> RunResult``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from . import rundir
from .config import ExperimentConfig, config_diff, load_config, partition_params, to_yaml
from .errors import ConfigError, RunDirError
from .store import RunStore, read_json, read_jsonl

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run left in its directory."""

    summary: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path
    config: ExperimentConfig
    #: set when nothing ran: why ("already finished after 10 rounds")
    note: str | None = None

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


def load_result(run_dir: str | Path, note: str | None = None) -> RunResult:
    store = RunStore(run_dir)
    if not store.summary.exists():
        raise RunDirError(f"'{run_dir}' holds no summary.json: the run has not finished")
    summary = read_json(store.summary, "summary")
    return RunResult(summary, read_jsonl(store.metrics, "metrics"), store.root, _saved_config(store), note)


def _saved_config(store: RunStore) -> ExperimentConfig:
    try:
        return load_config(store.config)
    except ConfigError as exc:
        raise RunDirError(f"'{store.config}' is not a valid fedsim config ({exc})") from exc


def check_resume(cfg: ExperimentConfig, store: RunStore) -> RunResult | None:
    """Whether ``cfg`` may continue the run in ``store``; a RunResult when there is
    nothing left to do (finished, or ended as diverged), None when it may go on.

    The config must be the run's own, except for what does not change a run's identity
    (engine placement, failure tolerances, output) and ``federation.rounds``, which may
    be raised to train a finished run on. The partition file must be the config's.
    """
    if not store.config.exists():
        return None  # nothing was written yet: a fresh start
    saved = _saved_config(store)
    diff = config_diff(saved, cfg)
    if diff:
        raise RunDirError(f"--resume: the config differs from the one '{store.root}' was started with in {'; '.join(diff[:4])}"
                          f"{' and more' if len(diff) > 4 else ''}; resume with its config.yaml")
    if store.dataidxs.exists():
        check_partition_file(cfg, store)
    if not store.summary.exists():
        return None
    summary = read_json(store.summary, "summary")
    done = int(summary.get("rounds") or 0)
    if summary.get("status") == "diverged":
        return load_result(store.root, f"ended as diverged in round {summary.get('diverged_round')}; nothing to resume")
    if cfg.federation.rounds < done:
        raise RunDirError(f"--resume: federation.rounds={cfg.federation.rounds} is below the {done} rounds the run has done; "
                          "a run can be extended, not shortened")
    if cfg.federation.rounds == done:
        return load_result(store.root, f"already finished after {done} rounds; nothing to do (raise federation.rounds to train on)")
    log.info("extending the run in '%s' from %d to %d rounds", store.root, done, cfg.federation.rounds)
    return None


def check_partition_file(cfg: ExperimentConfig, store: RunStore) -> None:
    """RunDirError unless the run's dataidxs.npz is the partition ``cfg`` describes."""
    import partitioners

    try:
        meta = partitioners.read_dataidxs_meta(store.dataidxs)
    except ValueError as exc:
        raise RunDirError(str(exc)) from exc
    want = {"scheme": cfg.partition.scheme, "seed": cfg.seed, "n_parties": cfg.partition.n_parties}
    for key, value in want.items():
        if meta[key] != value:
            raise RunDirError(f"--resume: '{store.dataidxs}' was made with {key}={meta[key]!r}, the config asks for {value!r}; "
                              "resume with the run's own config")
    params = {k: v for k, v in partition_params(cfg).items() if not hasattr(v, "shape")}
    for key, value in params.items():
        if key in meta["params"] and meta["params"][key] != value:
            raise RunDirError(f"--resume: '{store.dataidxs}' was made with partition.{key}={meta['params'][key]!r}, "
                              f"the config asks for {value!r}; resume with the run's own config")


def check_runnable(cfg: ExperimentConfig, store: RunStore, resume: bool):
    """Everything that can fail on the user's input, before anything is written.

    Loads the dataset (missing files), partitions it (impossible parameters) unless a
    resumed run brings its own dataidxs, and builds the model (a CNN on tabular data).
    """
    from .experiment import compute_dataidxs, load_bundle, resolve_device
    from .models import build_model
    from .resources import check_model_fits

    resolve_device(cfg.engine.device)
    if cfg.engine.name == "ray" and cfg.engine.ray_address:
        from .engine.ray import check_reachable

        check_reachable(cfg.engine.ray_address)
    if cfg.output.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            from .errors import ConfigError

            raise ConfigError("output.tensorboard: true needs tensorboard: pip install 'fedsim[tensorboard]'")
    bundle = load_bundle(cfg)
    dataidxs = None if (resume and store.dataidxs.exists()) else compute_dataidxs(cfg, bundle)
    check_model_fits(cfg.model, bundle.input_shape, bundle.num_classes)
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
    # everything that can refuse the input is checked before anything is written (not
    # even the lock file), then again under the lock (another process may have moved on)
    rundir.claim(run_dir, "run", resume=resume, overwrite=overwrite, check_only=True)
    done = check_resume(cfg, store) if resume else None
    if done is not None:
        log.info("run in '%s' %s", run_dir, done.note)
        return done
    dataidxs = check_runnable(cfg, store, resume)
    with rundir.DirLock(run_dir, "run"):
        if resume:
            done = check_resume(cfg, store)
            if done is not None:
                log.info("run in '%s' %s", run_dir, done.note)
                return done
        if cfg.engine.threads > 0:
            torch.set_num_threads(cfg.engine.threads)
        rundir.claim(run_dir, "run", resume=resume, overwrite=overwrite)
        prepare_run_dir(cfg, store, plots=cfg.output.plots, dataidxs=dataidxs)
        settings = RunSettings(to_yaml(cfg), str(run_dir.resolve()), resume=resume)
        get_engine(cfg.engine.name)(settings, hooks)
        return load_result(run_dir)
