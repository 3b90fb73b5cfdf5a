"""Dataset registry: a name -> a :class:`Dataset` plug-in; :func:`load_dataset` caches what it returns.

A dataset family is one module of this package (found on first use: no import line
anywhere) holding decorated loaders, each declaring what the plug-in mechanism
(:mod:`fedsim.util.plugins`) asks of a plug-in::

    @dataclass
    class MySetParams(DataConfig):          # data.* with this data set: the common keys + its own
        crop: int = hp(0, ge=0, help="...", source="...")

    @register("my-set", summary="...", paper="...", Params=MySetParams, spec=lambda cfg: ((3, 32, 32), 10))
    def load(cfg: MySetParams, seed: int, n_parties: int) -> DatasetBundle: ...

(or a :class:`Dataset` subclass with ``load`` and ``@register`` on the class).

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
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedsim.errors import DataError
from fedsim.schema.sections import DataConfig
from fedsim.util.plugins import Plugin, Registry, close_match

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

    @classmethod
    def from_arrays(
        cls,
        name: str,
        arrays: Mapping[str, np.ndarray],
        num_classes: int,
        mean: tuple[float, ...] | None,
        std: tuple[float, ...] | None,
        augment: bool,
    ) -> DatasetBundle:
        """A bundle of decoded arrays (:func:`fedsim.data.cache.cached`): ``x_train``,
        ``y_train``, ``x_test``, ``y_test`` and, where the data set has them, ``groups`` and
        ``groups_test``."""
        return cls(
            name,
            torch.from_numpy(arrays["x_train"]),
            torch.from_numpy(arrays["y_train"]),
            torch.from_numpy(arrays["x_test"]),
            torch.from_numpy(arrays["y_test"]),
            num_classes,
            mean,
            std,
            augment,
            groups=arrays.get("groups"),
            groups_test=arrays.get("groups_test"),
        )

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
CheckFn = Callable[[Any], "str | None"]

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
    if isinstance(value, dict) or type(value).__name__ == "DictConfig":
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def default_key(cfg: DataConfig, seed: int, n_parties: int) -> Hashable:
    """Every ``data.*`` value that can change the data (the data set's own keys too),
    the seed and ``n_parties``."""
    names = [f.name for f in dataclasses.fields(cfg) if f.name not in _NOT_DATA_KEYS]
    return tuple((n, _freeze(getattr(cfg, n))) for n in names) + (("seed", int(seed)), ("n_parties", int(n_parties)))


class Dataset(Plugin):
    """One data set: ``load`` returns it whole as tensors (module docstring)."""

    Params: type = DataConfig

    def load(self, cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
        raise NotImplementedError

    def key(self, cfg: DataConfig, seed: int, n_parties: int) -> Hashable:
        """What makes two loads give the same data (a file-backed set ignores the seed)."""
        return default_key(cfg, seed, n_parties)

    def spec(self, cfg: DataConfig) -> tuple[tuple[int, ...], int] | None:
        """(input shape, number of classes) without loading anything, or None (then it loads)."""
        return None

    def is_text(self, cfg: DataConfig) -> bool:
        """Whether the inputs are int64 token sequences (the config pairs them with a sequence model)."""
        return False


class _LoaderDataset(Dataset):
    """The plug-in :func:`register` makes of a loader function and its declarations."""

    def __init__(self, name: str, fn: Loader, key: KeyFn | None, spec: SpecFn | None, text: bool | TextFn,
                 check: CheckFn | None, summary: str, paper: str, Params: type, reads: tuple[str, ...]) -> None:  # fmt: skip
        self.name, self.fn, self._key, self._spec, self._text, self._check = name, fn, key, spec, text, check
        self.summary, self.paper, self.Params, self.reads = summary, paper, Params, tuple(reads)

    def load(self, cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
        return self.fn(cfg, seed, n_parties)

    def key(self, cfg: DataConfig, seed: int, n_parties: int) -> Hashable:
        return (self._key or default_key)(cfg, seed, n_parties)

    def spec(self, cfg: DataConfig) -> tuple[tuple[int, ...], int] | None:
        return self._spec(cfg) if self._spec is not None else None

    def is_text(self, cfg: DataConfig) -> bool:
        return bool(self._text(cfg)) if callable(self._text) else bool(self._text)

    def check(self, cfg: Any) -> str | None:
        return self._check(cfg) if self._check is not None else None


#: the data sets: the modules of fedsim/data, listed in this order (then any other file's)
DATASETS: Registry[Dataset] = Registry(
    "data set",
    "fedsim.data",
    section="data",
    chooser="dataset",
    base=DataConfig,
    ordered=True,
    first=("torchvision_sets", "synthetic", "synthetic_images", "leaf", "hf", "imagefolder"),
    error=DataError,
)


def register(
    name: str | type[Dataset],
    *,
    key: KeyFn | None = None,
    spec: SpecFn | None = None,
    text: bool | TextFn = False,
    check: CheckFn | None = None,
    summary: str = "",
    paper: str = "",
    Params: type = DataConfig,
    reads: tuple[str, ...] = (),
) -> Any:
    """Decorator: register ``fn(cfg, seed, n_parties) -> DatasetBundle`` as data set ``name``
    (or, on a :class:`Dataset` subclass, that class).

    ``key(cfg, seed, n_parties)`` names what makes two loads give the same data (a
    file-backed set ignores the seed); it defaults to :func:`default_key`.
    ``spec(cfg) -> (input_shape, num_classes)`` describes the data without loading it.
    ``text`` (or ``text(cfg)``) says the inputs are int64 token sequences, so that the
    config check can pair them with a sequence model before anything loads.
    ``check(cfg)`` says why a config cannot use the data set; ``Params`` is its
    ``data.*`` dataclass (:class:`DataConfig` and its own keys); ``reads``: the common
    ``data.*`` keys it reads (for the listings).
    """
    if isinstance(name, type):
        return DATASETS.register(name)

    def deco(fn: Loader) -> Loader:
        DATASETS.add(_LoaderDataset(name, fn, key, spec, text, check, summary, paper, Params, reads), fn.__module__)
        return fn

    return deco


def unregister(name: str) -> None:
    """Remove a data set (tests that register their own)."""
    DATASETS.unregister(name)


def is_text(cfg: DataConfig) -> bool:
    """Whether ``cfg.dataset`` gives token sequences (False for an unknown name)."""
    return cfg.dataset in DATASETS and DATASETS.get(cfg.dataset).is_text(cfg)


def available() -> list[str]:
    """Registered dataset names, in registration order."""
    return DATASETS.available()


def _lookup(name: str) -> Dataset:
    if name not in DATASETS:
        names = available()
        raise DataError(
            f"config key 'data.dataset' = {name!r} is not a known dataset{close_match(name, names)}; "
            f"allowed: {', '.join(names)}"
        )
    return DATASETS.get(name)


def load_dataset(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
    """The dataset ``cfg.dataset`` as tensors; the same object on a repeated call.

    Raises :class:`~fedsim.errors.DataError` (one line) when files are missing or corrupt.
    """
    dataset = _lookup(cfg.dataset)
    key = (cfg.dataset, dataset.key(cfg, int(seed), int(n_parties)))
    with _LOCK:
        bundle = _CACHE.get(key)
        if bundle is not None:
            return bundle
        t0 = time.perf_counter()
        bundle = dataset.load(cfg, int(seed), int(n_parties))
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
    spec = _lookup(cfg.dataset).spec(cfg)
    if spec is not None:
        shape, k = spec
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
