"""``privacy.*`` checked before anything is written: what the config alone cannot tell.

The extra is installed, the model has no BatchNorm, delta is below 1/N, the noise can be
calibrated and one round fits the budget; a resume that could not stay within the
budget with its checkpoint's ledger is refused.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterable, Mapping, Sized

import torch

import strategies
from fedsim.errors import ConfigError
from fedsim.models import has_batchnorm
from fedsim.privacy import compat as privacy_compat
from fedsim.privacy.accounting import DELTA_SHARE, default_delta
from fedsim.privacy.run import PrivacyRun, training_sizes
from fedsim.rundir.checkpoint import Checkpoint
from fedsim.schema.experiment import ExperimentConfig
from strategies.strategy import from_portable

log = logging.getLogger(__name__)


def check_privacy(
    cfg: ExperimentConfig,
    model: torch.nn.Module,
    dataidxs: Callable[[], Mapping[int, Sized]],
    holdout: Callable[[], Iterable[int]],
    checkpoint: Callable[[], Checkpoint | None],
) -> None:
    """ConfigError when ``privacy.*`` cannot run (module docstring); nothing with
    ``privacy.mode: none``. ``dataidxs()``, ``holdout()``: the run's partition and
    held-out parties; ``checkpoint()``: the checkpoint a resume continues from (None:
    a fresh start); all read only when privacy is on."""
    if cfg.privacy.mode == "none":
        return
    _check_combination(cfg, model)
    try:
        run = PrivacyRun(cfg, training_sizes(dataidxs(), holdout()))
        ckpt = checkpoint()
        if ckpt is not None and PrivacyRun.CHECKPOINT_KEY in ckpt.strategy:
            run.load_state_dict(from_portable(ckpt.strategy[PrivacyRun.CHECKPOINT_KEY]))
            run.check_resume(ckpt.history)
    except ValueError as exc:  # Flower's adaptive noise split with a calibrated sigma
        raise ConfigError(f"privacy: {exc}") from exc
    if ckpt is None:
        run.check_start()
    _warn_weak(cfg, run)


def _check_combination(cfg: ExperimentConfig, model: torch.nn.Module) -> None:
    """The mode runs with this algorithm and model, and its libraries are installed."""
    problem = privacy_compat.why_not(cfg, strategies.get(cfg.strategy.name), has_batchnorm(model))
    if problem:
        raise ConfigError(problem)
    for module, what in (("dp_accounting", "Google's dp-accounting"), ("opacus", "Opacus")):
        if module == "opacus" and cfg.privacy.mode not in privacy_compat.PER_SAMPLE:
            continue
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"privacy.mode {cfg.privacy.mode!r} needs {what}: pip install 'fedsim[privacy]'")


def _warn_weak(cfg: ExperimentConfig, run: PrivacyRun) -> None:
    """A warning for a guarantee that says little: delta near 1/N, or no noise at all."""
    n = run.population
    if cfg.privacy.target_delta is not None and cfg.privacy.target_delta > DELTA_SHARE / n:
        log.warning(
            "privacy.target_delta=%g is not well below 1/N = %.3g (N = %d %s): the guarantee may fail outright "
            "with about that probability, so epsilon says little; the default is %.3g",
            cfg.privacy.target_delta,
            1.0 / n,
            n,
            run.population_what,
            default_delta(n),
        )
    if run.sigma == 0:
        log.warning(
            "privacy.noise_multiplier=0 adds no noise: nothing is private and epsilon is infinite "
            "(recorded as epsilon null, epsilon_infinite true)"
        )
