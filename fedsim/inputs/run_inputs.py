"""The parts of a run that every process rebuilds the same way: settings, data, dataidxs.

A ServerApp and its ClientApps may live in one process (local engine), in worker
processes or in Ray actors. Each builds the experiment from the validated config and
the run directory (:class:`RunSettings`) once and caches it per process: the dataset
is loaded once, and so is the partition (read from ``dataidxs.npz``, which the run's
preparation wrote and whose label checksum guards against a mis-split).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

import partitioners
from fedsim.data import DatasetBundle, load_dataset
from fedsim.errors import ConfigError, DataError
from fedsim.inputs.localtest import LocalTest, make_local_test
from fedsim.rundir.store import RunStore
from fedsim.schema.experiment import ExperimentConfig
from fedsim.schema.identity import to_yaml
from fedsim.trackers import TrackingContext
from fedsim.util.seeding import derive
from partitioners.registry import partition_params
from strategies.cohort import holdout_count

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """What a ServerApp or ClientApp needs to find its run: the validated config object,
    the run directory, and whether it resumes. fedsim's engines bind the apps to it (Ray
    ships it to the actors with the apps); ``flwr run .`` builds it from Flower's run
    config (:mod:`fedsim.flwr_apps`)."""

    config: ExperimentConfig
    run_dir: str
    resume: bool = False
    #: the sweep or tune the run belongs to, for its trackers (fedsim/trackers/)
    tracking: TrackingContext | None = None

    def to_user_config(self) -> dict[str, Any]:
        """The Flower run_config of the nodes' Contexts (the apps read the bound settings)."""
        return {"fedsim-run-dir": self.run_dir, "fedsim-resume": self.resume}

    @cached_property
    def key(self) -> str:
        """Identifies the run in this process's caches."""
        return hashlib.sha256((to_yaml(self.config) + "\0" + self.run_dir).encode()).hexdigest()[:16]


def apply_determinism(cfg: ExperimentConfig) -> None:
    """``engine.deterministic``: deterministic kernels on GPU (CPU runs are exact anyway).

    Makes PyTorch use deterministic algorithms (raising for ops that have none),
    turns off cuDNN's autotuner and sets cuBLAS's workspace so its reductions are
    reproducible. Costs some GPU speed; see README "Determinism".
    """
    if not cfg.engine.deterministic:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def resolve_device(name: str) -> torch.device:
    """``engine.device``: auto = cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'engine.device' = '{name}' but no CUDA device is available; use auto or cpu")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("config key 'engine.device' = 'mps' but MPS is not available; use auto or cpu")
    return torch.device(name)


def set_up_torch(cfg: ExperimentConfig) -> torch.device:
    """This process's torch as the run needs it (``engine.deterministic``, ``engine.threads``)
    and the run's device: the same in the server's process as in every client's."""
    apply_determinism(cfg)
    if cfg.engine.threads > 0:
        # the same count in every process of every engine: CPU kernels split their
        # reductions by thread, so equal counts are what makes engines bit-equal
        torch.set_num_threads(cfg.engine.threads)
    return resolve_device(cfg.engine.device)


def cv_fold_bundle(bundle: DatasetBundle, folds: int, fold: int, seed: int) -> DatasetBundle:
    """Fold ``fold`` of ``folds`` of the pooled training data becomes the evaluation set.

    The training samples are dealt into K folds by one seeded permutation (the same
    for every fold index, so the folds are disjoint and cover the training set); the
    test set of the dataset is never touched, which keeps model selection honest.
    """
    n = int(bundle.y_train.numel())
    perm = np.random.default_rng(derive(seed, "cv-folds", folds)).permutation(n)
    held = np.sort(np.array_split(perm, folds)[fold])
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    keep = np.flatnonzero(mask)
    held_t, keep_t = torch.from_numpy(held), torch.from_numpy(keep)
    return dataclasses.replace(
        bundle,
        x_train=bundle.x_train[keep_t],
        y_train=bundle.y_train[keep_t],
        x_test=bundle.x_train[held_t],
        y_test=bundle.y_train[held_t],
        groups=None if bundle.groups is None else bundle.groups[keep],
        groups_test=None if bundle.groups is None else bundle.groups[held],
        superclasses=None if bundle.superclasses is None else bundle.superclasses[keep],
    )


_FOLD_CACHE: dict[tuple, DatasetBundle] = {}


def load_bundle(cfg: ExperimentConfig) -> DatasetBundle:
    """The run's dataset: ``data.*`` loaded once per process, with its CV fold applied."""
    bundle = load_dataset(cfg.data, cfg.data.seed, cfg.partition.n_parties)
    if cfg.data.cv_folds < 2:
        return bundle
    key = (id(bundle), cfg.data.cv_folds, cfg.data.cv_fold, cfg.seed)
    return bounded_get(
        _FOLD_CACHE, key, 4, lambda: cv_fold_bundle(bundle, cfg.data.cv_folds, cfg.data.cv_fold, cfg.seed)
    )


def compute_dataidxs(cfg: ExperimentConfig, bundle: DatasetBundle) -> dict[int, np.ndarray]:
    """Partition the training labels as configured (partitioners' API, seed = cfg.seed).

    ``partition.by: superclass`` hands the scheme the superclass ids instead of the
    labels; a scheme that takes ``groups`` gets the dataset's natural groups.
    """
    labels = bundle.y_train.numpy()
    if cfg.partition.by == "superclass":
        if bundle.superclasses is None:
            raise ConfigError(
                f"config key 'partition.by' = 'superclass' needs a dataset with superclasses (cifar100); "
                f"'{bundle.name}' has none"
            )
        labels = bundle.superclasses
    params = partition_params(cfg)
    if "groups" in partitioners.scheme_params(cfg.partition.scheme) and bundle.groups is not None:
        params["groups"] = bundle.groups
    if cfg.partition.scheme == "natural" and bundle.groups is None:
        raise ConfigError(
            f"partition.scheme 'natural' needs a dataset with natural groups (synthetic, leaf-femnist, "
            f"leaf-shakespeare, hf with data.hf_group_key); '{bundle.name}' has none"
        )
    try:
        return partitioners.partition(labels, cfg.partition.scheme, cfg.partition.n_parties, seed=cfg.seed, **params)
    except ValueError as exc:
        raise ConfigError(f"partition: {exc}") from exc


def compute_partition(cfg: ExperimentConfig, bundle: DatasetBundle) -> tuple[dict[int, np.ndarray], LocalTest | None]:
    """(the parties' training indices, their own test data) of the config: the scheme's
    dataidxs, with ``eval.local_test: split`` taking each party's test share out."""
    return make_local_test(cfg, compute_dataidxs(cfg, bundle), bundle)


def holdout_parties(value: float, n_parties: int, seed: int) -> list[int]:
    """The held-out parties: ``round(value * n)`` of them for a share in (0, 1), ``value``
    for a count >= 1, drawn without replacement from (seed, "holdout"); sorted."""
    k = holdout_count(value, n_parties)
    if k == 0:
        return []
    rng = np.random.default_rng(derive(seed, "holdout"))
    return sorted(int(p) for p in rng.choice(n_parties, size=k, replace=False))


def read_dataidxs(store: RunStore, labels: np.ndarray) -> dict[int, np.ndarray]:
    """The run's saved ``dataidxs.npz``, checked against the dataset's labels (a
    DataError, not a silent mis-split, when they differ)."""
    try:
        return partitioners.load_dataidxs(store.dataidxs, labels)
    except ValueError as exc:
        raise DataError(str(exc)) from exc


class Experiment:
    """Config + dataset + dataidxs of one run, shared by the apps of one process."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.cfg: ExperimentConfig = settings.config
        self.store = RunStore(settings.run_dir)

    @cached_property
    def bundle(self) -> DatasetBundle:
        return load_bundle(self.cfg)

    @cached_property
    def dataidxs(self) -> dict[int, np.ndarray]:
        if self.store.dataidxs.exists():
            return read_dataidxs(self.store, self.bundle.y_train.numpy())
        return compute_partition(self.cfg, self.bundle)[0]

    @cached_property
    def local_test(self) -> LocalTest | None:
        """Each party's own test data (``eval.local_test``), from ``dataidxs.npz``."""
        if self.store.dataidxs.exists():
            try:
                found = partitioners.load_local_test(self.store.dataidxs)
            except ValueError as exc:
                raise DataError(str(exc)) from exc
            return LocalTest(*found) if found is not None else None
        return compute_partition(self.cfg, self.bundle)[1]

    @cached_property
    def holdout(self) -> list[int]:
        """The parties ``federation.holdout_parties`` keeps out of training (sorted)."""
        return holdout_parties(self.cfg.federation.holdout_parties, self.cfg.partition.n_parties, self.cfg.seed)

    @cached_property
    def _held_out(self) -> frozenset[int]:
        return frozenset(self.holdout)

    @cached_property
    def mean_party_size(self) -> float:
        """The mean number of samples of the parties that train (held-out ones left out)."""
        sizes = partitioners.party_sizes(self.dataidxs)
        training = np.ones(sizes.size, dtype=bool)
        training[self.holdout] = False
        return sum(sizes[training].tolist()) / int(training.sum()) if training.any() else 0.0

    def party_weight(self, party: int) -> float:
        """n_k / mean(n) over the parties that train: the per-party weight of Acar et al.'s
        and Gao et al.'s code (``weight_list``), 1 for equal sizes and for a held-out party."""
        mean = self.mean_party_size
        if party in self._held_out or party not in self.dataidxs or mean <= 0:
            return 1.0
        return len(self.dataidxs[party]) / mean

    @cached_property
    def noise_levels(self) -> np.ndarray:
        return partitioners.noise_levels(self.cfg.data.feature_noise, self.cfg.partition.n_parties)

    def split(self, party: int) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) indices of a party; ``data.val_fraction`` held out, seeded."""
        idx = np.asarray(self.dataidxs.get(party, np.zeros(0, dtype=np.int64)), dtype=np.int64)
        frac = self.cfg.data.val_fraction
        if frac <= 0 or idx.size == 0:
            return idx, idx[:0]
        order = np.random.default_rng(derive(self.cfg.seed, "val-split", party)).permutation(idx.size)
        n_val = int(round(frac * idx.size))
        n_val = min(max(n_val, 1), idx.size - 1) if idx.size > 1 else 0
        shuffled = idx[order]
        return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


def bounded_get(cache: dict, key: Any, limit: int, make: Callable[[], Any]) -> Any:
    """``cache[key]``, made on a miss; the oldest entry goes once ``limit`` are held.

    The per-process caches (experiments, client runtimes, device copies of datasets,
    CV folds) are explicit dicts bounded this way: a sweep in one process must not pin
    every dataset it has seen.
    """
    hit = cache.get(key)
    if hit is None:
        if len(cache) >= limit:
            cache.pop(next(iter(cache)))
        hit = cache[key] = make()
    return hit


_EXPERIMENTS: dict[str, Experiment] = {}


def experiment_for(settings: RunSettings) -> Experiment:
    """The process-wide Experiment of these settings."""
    return bounded_get(_EXPERIMENTS, settings.key, 4, lambda: Experiment(settings))


_DEVICE_DATA: dict[tuple[int, str], torch.Tensor] = {}


def on_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One copy of a dataset tensor per device and process, shared by every party
    (and by the server's per-party evaluation in the same process)."""
    if device.type == "cpu":
        return t
    return bounded_get(_DEVICE_DATA, (id(t), str(device)), 8, lambda: t.to(device))
