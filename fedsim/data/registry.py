"""Dataset registry: a name -> a loader; :func:`load_dataset` caches what it returns.

A dataset family is one module holding decorated loaders::

    @register("my-set", key=lambda cfg, seed, n_parties: (...))
    def load(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle: ...

A loader returns the whole dataset as tensors (docs/architecture.md, decision 4): images as uint8
``(N, C, H, W)``, tabular features as float32 ``(N, D)``, token sequences as int64
``(N, L)`` (the label is the next token: classification over the vocabulary), labels as
int64. Parties are index arrays into ``x_train``; nothing here knows about partitions.

Loading happens once per process: :func:`load_dataset` keeps every bundle it built in
a per-process cache keyed by the config values that change the data (``key`` of the
registration; by default every ``data.*`` value that can, plus the seed and the number
of parties), so the engine's workers, clients and rounds share one copy.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedsim.config.schema import DataConfig
from fedsim.errors import DataError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class DatasetBundle:
    """A whole dataset in memory. Shared through the cache: treat it as read-only."""

    name: str
    # uint8 (N, C, H, W) for images; float32 (N, D) for tabular; int64 (N, L) for tokens
    x_train: torch.Tensor
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    # per-channel normalisation of images in [0, 1] scale; None for tabular data
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    # CIFAR-style augmentation (crop with padding 4 + flip) applies when training
    augment: bool
    # natural group id per training sample (synthetic: the generating party; LEAF: the
    # user; hf: data.hf_group_key), else None
    groups: np.ndarray | None = None
    # the same ids for the test samples where the test set has them (LEAF: each user's
    # own test data), so a party's users' test samples can be found; else None
    groups_test: np.ndarray | None = None
    # superclass id per training sample (cifar100's 20 coarse labels), for
    # partition.by: superclass; else None
    superclasses: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` for images, ``(D,)`` for tabular data."""
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x_train.dim() == 4

    @property
    def is_text(self) -> bool:
        """Token sequences (int64): fed to the model as they are, never normalised."""
        return self.x_train.dtype == torch.int64

    def __repr__(self) -> str:
        return (
            f"DatasetBundle(name={self.name!r}, train={tuple(self.x_train.shape)} {self.x_train.dtype}, "
            f"test={tuple(self.x_test.shape)}, num_classes={self.num_classes}, augment={self.augment}, "
            f"groups={'None' if self.groups is None else len(np.unique(self.groups))})"
        )


Loader = Callable[[DataConfig, int, int], DatasetBundle]
KeyFn = Callable[[DataConfig, int, int], Hashable]
SpecFn = Callable[[DataConfig], "tuple[tuple[int, ...], int]"]
TextFn = Callable[[DataConfig], bool]

# name -> (loader, cache-key function), in registration order
_REGISTRY: dict[str, tuple[Loader, KeyFn]] = {}
# name -> (input shape, number of classes) without loading anything (fedsim inspect)
_SPECS: dict[str, SpecFn] = {}
# name -> whether its inputs are token sequences (a bool, or a function of the config)
_TEXT: dict[str, TextFn] = {}
_CACHE: dict[tuple[str, Hashable], DatasetBundle] = {}
# Held while loading: two engine threads asking for the same dataset must not load it
# twice (a CIFAR copy is 150 MB); loads are rare, so one lock for all is enough.
_LOCK = threading.RLock()

# data.* keys that never change the tensors a loader returns: they act per party
# (validation split, feature noise) or only on how files are obtained (download)
_NOT_DATA_KEYS = ("download", "val_fraction", "feature_noise", "cv_folds", "cv_fold")


def _freeze(value: Any) -> Hashable:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return tuple(_freeze(v) for v in value)
    return value


def default_key(cfg: DataConfig, seed: int, n_parties: int) -> Hashable:
    """Every ``data.*`` value that can change the data, the seed and ``n_parties``."""
    names = [f.name for f in dataclasses.fields(DataConfig) if f.name not in _NOT_DATA_KEYS]
    return tuple((n, _freeze(getattr(cfg, n))) for n in names) + (("seed", int(seed)), ("n_parties", int(n_parties)))


def register(
    name: str, *, key: KeyFn | None = None, spec: SpecFn | None = None, text: bool | TextFn = False
) -> Callable[[Loader], Loader]:
    """Decorator: register ``fn(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle``.

    ``key(cfg, seed, n_parties)`` names what makes two loads give the same data (a
    file-backed set ignores the seed); it defaults to :func:`default_key`.
    ``spec(cfg) -> (input_shape, num_classes)`` describes the data without loading it.
    ``text`` (or ``text(cfg)``) says the inputs are int64 token sequences, so that the
    config check can pair them with a sequence model before anything loads.
    """

    def deco(fn: Loader) -> Loader:
        if name in _REGISTRY and _REGISTRY[name][0] is not fn:
            raise ValueError(f"dataset '{name}' is already registered (by {_REGISTRY[name][0].__module__})")
        _REGISTRY[name] = (fn, key or default_key)
        if spec is not None:
            _SPECS[name] = spec
        _TEXT[name] = text if callable(text) else (lambda cfg, _t=bool(text): _t)
        return fn

    return deco


def is_text(cfg: DataConfig) -> bool:
    """Whether ``cfg.dataset`` gives token sequences (False for an unknown name)."""
    fn = _TEXT.get(cfg.dataset)
    return bool(fn(cfg)) if fn is not None else False


def available() -> list[str]:
    """Registered dataset names, in registration order."""
    return list(_REGISTRY)


def _lookup(name: str) -> tuple[Loader, KeyFn]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DataError(
            f"config key 'data.dataset' = {name!r} is not a known dataset{hint}; allowed: {', '.join(available())}"
        )
    return _REGISTRY[name]


def load_dataset(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
    """The dataset ``cfg.dataset`` as tensors; the same object on a repeated call.

    Raises :class:`~fedsim.errors.DataError` (one line) when files are missing or corrupt.
    """
    loader, key_fn = _lookup(cfg.dataset)
    key = (cfg.dataset, key_fn(cfg, int(seed), int(n_parties)))
    with _LOCK:
        bundle = _CACHE.get(key)
        if bundle is not None:
            return bundle
        t0 = time.perf_counter()
        bundle = loader(cfg, int(seed), int(n_parties))
        _check_bundle(bundle)
        _CACHE[key] = bundle
    log.info(
        "dataset %s: %d train, %d test, input %s, %d classes (%.2f s)",
        bundle.name,
        len(bundle.y_train),
        len(bundle.y_test),
        bundle.input_shape,
        bundle.num_classes,
        time.perf_counter() - t0,
    )
    return bundle


def input_spec(cfg: DataConfig) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes) of ``cfg.dataset``, without loading it."""
    _lookup(cfg.dataset)
    if cfg.dataset in _SPECS:
        shape, k = _SPECS[cfg.dataset](cfg)
        return tuple(int(s) for s in shape), int(k)
    b = load_dataset(cfg, 0, 1)
    return b.input_shape, b.num_classes


def clear_cache() -> None:
    """Forget every cached dataset (tests; a long-lived process switching datasets)."""
    with _LOCK:
        _CACHE.clear()


def _check_bundle(b: DatasetBundle) -> None:
    # A loader bug here would surface much later as a shape error in some client:
    # fail at the source instead. These are bugs, not user errors: AssertionError.
    assert b.y_train.dtype == torch.int64 and b.y_test.dtype == torch.int64, "labels must be int64"
    assert len(b.x_train) == len(b.y_train) and len(b.x_test) == len(b.y_test), "x/y length mismatch"
    assert b.x_train.shape[1:] == b.x_test.shape[1:], "train/test input shapes differ"
    if b.is_image:
        assert b.x_train.dtype == torch.uint8, "images must be uint8"
        assert b.mean is not None and b.std is not None and len(b.mean) == len(b.std) == b.x_train.shape[1]
    if b.is_text:
        assert b.x_train.dim() == 2 and b.mean is None and not b.augment, "tokens: (N, L), not normalised"
    if b.groups is not None:
        assert len(b.groups) == len(b.y_train), "one group id per training sample"
    if b.groups_test is not None:
        assert len(b.groups_test) == len(b.y_test), "one group id per test sample"
    if b.superclasses is not None:
        assert len(b.superclasses) == len(b.y_train), "one superclass per training sample"
