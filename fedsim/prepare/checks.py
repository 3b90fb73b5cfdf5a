"""Everything that can refuse the user's input, checked before anything is written.

:func:`check_inputs` loads the data set (missing files), partitions it (impossible
parameters) unless a resumed run brings its own partition, builds the model (a CNN on
tabular data, one too large for memory), asks the algorithm, the attack and privacy
whether they can run on them, and checks that the device, the Ray head and the chosen
trackers are there. What it loaded is handed on, so that the run directory's first
files are written from it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

import partitioners
import strategies
from fedsim import trackers
from fedsim.data import DatasetBundle
from fedsim.errors import ConfigError
from fedsim.inputs.adversary import check_attack_data
from fedsim.inputs.localtest import LocalTest
from fedsim.inputs.resources import check_model_fits
from fedsim.inputs.run_inputs import compute_partition, holdout_parties, load_bundle, read_dataidxs, resolve_device
from fedsim.models import build_model
from fedsim.privacy.preflight import check_privacy
from fedsim.rundir.checkpoint import latest_checkpoint
from fedsim.rundir.store import RunStore
from fedsim.schema.experiment import ExperimentConfig
from fedsim.util.ray_address import check_reachable

log = logging.getLogger(__name__)

#: a fresh run's partition: (the parties' training indices, their own test data)
Partition = tuple[dict[int, np.ndarray], LocalTest | None]


@dataclass
class CheckedInputs:
    """What the checks loaded: the data set, and a fresh run's partition (None: a
    resumed run keeps the one it was started with)."""

    bundle: DatasetBundle
    partition: Partition | None


def check_inputs(cfg: ExperimentConfig, store: RunStore, resume: bool) -> CheckedInputs:
    """Everything that can fail on the user's input, before anything is written
    (module docstring); returns what it loaded."""
    check_environment(cfg)
    bundle = load_bundle(cfg)
    # a resumed run keeps the partition it was started with
    partition = None if (resume and store.dataidxs.exists()) else compute_partition(cfg, bundle)
    if partition is not None:
        check_party_sizes(cfg, partition[0])
    check_model_fits(cfg.model, bundle.input_shape, bundle.num_classes)
    check_attack_data(cfg, bundle)
    model = build_model(cfg.model, bundle.input_shape, bundle.num_classes)
    problem = strategies.get(cfg.strategy.name).check_model(cfg.strategy, model)
    if problem:
        raise ConfigError(problem)
    check_privacy(
        cfg,
        model,
        dataidxs=lambda: read_dataidxs(store, bundle.y_train.numpy()) if partition is None else partition[0],
        holdout=lambda: holdout_parties(cfg.federation.holdout_parties, cfg.partition.n_parties, cfg.seed),
        checkpoint=lambda: latest_checkpoint(store, warn=False) if partition is None else None,
    )
    return CheckedInputs(bundle, partition)


def check_environment(cfg: ExperimentConfig) -> None:
    """The device, the Ray head and the chosen trackers' libraries are there."""
    resolve_device(cfg.engine.device)
    if cfg.engine.name == "ray" and cfg.engine.ray_address:
        check_reachable(cfg.engine.ray_address)
    if cfg.output.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("output.tensorboard: true needs tensorboard: pip install 'fedsim[tensorboard]'")
    for name in trackers.chosen(cfg.output):
        t = trackers.get(name)
        if t.module and importlib.util.find_spec(t.module) is None:
            raise ConfigError(f"output.trackers: {name} needs {t.module}: pip install 'fedsim[{t.extra}]'")


def check_party_sizes(cfg: ExperimentConfig, dataidxs: Mapping[int, np.ndarray]) -> None:
    """Parties that cannot do what the config asks of them, before anything is written.

    A party without training samples has nothing to train on (its update was NaN, and
    the run reported a divergence in round 1): refused, naming the parties. With local
    validation (``data.val_fraction``, ``federation.fraction_evaluate``) a party of one
    sample has no validation sample: it is left out of the evaluation cohorts, said
    once; when no party has one, the config is refused.
    """
    sizes = partitioners.party_sizes(dataidxs)  # party p's at p: the parties are 0..n-1
    empty = np.flatnonzero(sizes == 0).tolist()
    if empty:
        shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
        raise ConfigError(
            f"partition.scheme '{cfg.partition.scheme}' gives {len(empty)} of {len(sizes)} parties no training "
            f"sample (parties {shown}): an empty party has nothing to train on; raise partition.min_size "
            "(dirichlet, quantity-skew) or beta, or use fewer parties"
        )
    if cfg.data.val_fraction > 0 and cfg.federation.fraction_evaluate > 0:
        evaluating = np.ones(sizes.size, dtype=bool)
        evaluating[holdout_parties(cfg.federation.holdout_parties, cfg.partition.n_parties, cfg.seed)] = False
        single = int((evaluating & (sizes <= 1)).sum())
        evaluating = int(evaluating.sum())
        if single and single == evaluating:
            raise ConfigError(
                f"data.val_fraction={cfg.data.val_fraction:g} gives no party a validation sample (each has one "
                "sample, which it trains on): federation.fraction_evaluate would evaluate nothing; use larger "
                "parties (fewer of them) or federation.fraction_evaluate=0"
            )
        if single:
            log.warning(
                "data.val_fraction=%g: %d of %d parties have one sample and no validation sample: they are "
                "left out of the evaluation cohorts",
                cfg.data.val_fraction,
                single,
                evaluating,
            )
