"""CIFAR-10, CIFAR-100, MNIST, Fashion-MNIST and SVHN from torchvision's on-disk layout.

The files are read straight into uint8 tensors (no PIL, no per-sample work):

=========  ==============================================================================
cifar10    ``root/cifar-10-batches-py/data_batch_1..5``, ``test_batch`` (pickled dicts)
cifar100   ``root/cifar-100-python/train``, ``test`` (pickled dicts: ``fine_labels``, 100 classes,
           and ``coarse_labels``, the 20 superclasses: ``data.cifar100_labels``)
mnist      ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
fmnist     the same under ``root/FashionMNIST/raw/``
svhn       ``root/train_32x32.mat``, ``root/test_32x32.mat`` (MATLAB; label 10 is digit 0)
=========  ==============================================================================

Only with ``data.download: true`` are missing files fetched, by torchvision's own
dataset classes (which write exactly this layout); they are then read as above.

The CIFAR files are pickles, and unpickling runs code named in the file, so they go
through :class:`RestrictedUnpickler`, which knows only how to rebuild numpy arrays and
plain containers: a file someone sent cannot run anything.
"""

from __future__ import annotations

import _codecs
import builtins
import gzip
import logging
import pickle
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim.data.registry import DatasetBundle, register
from fedsim.errors import DataError
from fedsim.schema.sections import DataConfig
from fedsim.util.params import hp

log = logging.getLogger(__name__)

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)


# ------------------------------------------------------------------ safe unpickling


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickled ndarray (numpy 1.x or 2.x, protocol 0-5) refers to."""
    try:  # numpy >= 2 moved the internals to numpy._core; old pickles still say numpy.core
        from numpy._core import multiarray as _ma
        from numpy._core import numeric as _num
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as _ma  # type: ignore[no-redef]
        from numpy.core import numeric as _num
    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = _ma._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = _ma.scalar
        allowed[(f"{mod}.numeric", "_frombuffer")] = _num._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # protocol <= 2 pickles bytes under Python 3 as _codecs.encode(str, 'latin1')
    allowed[("_codecs", "encode")] = _codecs.encode
    for name in (
        "list",
        "dict",
        "tuple",
        "set",
        "frozenset",
        "bytes",
        "bytearray",
        "str",
        "int",
        "float",
        "complex",
        "bool",
    ):
        allowed[("builtins", name)] = getattr(builtins, name)
        allowed[("__builtin__", name)] = allowed[("builtins", name)]  # Python 2 pickles
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that rebuilds numpy arrays, dtypes and builtin containers, nothing else.

    ``find_class`` is the only way a pickle reaches a callable; anything not on the
    allow-list (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) raises
    :class:`pickle.UnpicklingError` before it is even imported.
    """

    _ALLOWED = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a dataset file") from None


def safe_load_pickle(path: Path) -> Any:
    """Unpickle a dataset file with :class:`RestrictedUnpickler`; DataError naming it if bad."""
    try:
        with open(path, "rb") as f:
            # encoding='bytes': the CIFAR files are Python 2 pickles whose keys are byte strings
            return RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"dataset file '{path}' was refused or is corrupt: {exc}") from exc
    except Exception as exc:  # EOFError, ValueError from numpy, struct errors...: all mean a bad file
        raise DataError(f"dataset file '{path}' is corrupt or truncated ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------------- file checks


def _missing_error(name: str, root: Path, where: Path, files: list[str], missing: list[str], gz: bool) -> DataError:
    looked = ", ".join(files) + (" (or .gz)" if gz else "")
    holds = f"'{where.relative_to(root)}/'" if where != root else "these files"
    fix = f"set data.download: true to fetch it, or data.root to the directory that holds {holds}"
    if len(missing) == len(files):
        return DataError(f"dataset '{name}' not found: looked for {looked} in '{where}'; {fix}")
    return DataError(
        f"dataset '{name}' is incomplete in '{where}': {', '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} missing (looked for {looked}); {fix}"
    )


def _root(cfg: DataConfig) -> Path:
    return Path(str(cfg.root)).expanduser().resolve()


def _ensure(
    cfg: DataConfig,
    name: str,
    where: Path,
    files: list[str],
    fetch: Callable[[Path], None],
    alternatives: Callable[[str], list[str]] = lambda f: [f],
) -> dict[str, Path]:
    """Path of each of ``files`` under ``where`` (downloading if allowed), else DataError.

    ``alternatives(f)`` lists the file names that satisfy ``f``, in order of preference
    (MNIST: the plain idx file, then its ``.gz``).
    """

    def find() -> tuple[dict[str, Path], list[str]]:
        found, missing = {}, []
        for f in files:
            for alt in alternatives(f):
                if (where / alt).is_file():
                    found[f] = where / alt
                    break
            else:
                missing.append(f)
        return found, missing

    found, missing = find()
    if missing and cfg.download:
        log.info("dataset %s: %s missing under %s; downloading with torchvision", name, ", ".join(missing), where)
        try:
            fetch(_root(cfg))
        except DataError:
            raise
        except Exception as exc:  # network, checksum, disk: all reported as one line
            raise DataError(
                f"dataset '{name}': download into '{_root(cfg)}' failed: {type(exc).__name__}: {exc}"
            ) from exc
        found, missing = find()
    if missing:
        raise _missing_error(name, _root(cfg), where, files, missing, gz=len(alternatives(files[0])) > 1)
    return found


def _resolve_augment(cfg: DataConfig, default: bool) -> bool:
    return default if cfg.augment is None else bool(cfg.augment)


def _file_key(cfg: DataConfig, seed: int, n_parties: int) -> Hashable:
    # files do not depend on the seed or the federation size
    return (str(_root(cfg)), cfg.augment)


def _labels(values: Any, path: Path, n: int, num_classes: int) -> torch.Tensor:
    try:
        y = np.asarray(values, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"dataset file '{path}' is corrupt: labels are not integers ({exc})") from exc
    if len(y) != n:
        raise DataError(f"dataset file '{path}' is corrupt: {n} images but {len(y)} labels")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"dataset file '{path}' is corrupt: labels outside [0, {num_classes - 1}]")
    return torch.from_numpy(y)


# -------------------------------------------------------------------------- CIFAR


def _read_cifar_batch(
    path: Path, label_key: str, num_classes: int, coarse: bool = False
) -> tuple[np.ndarray, torch.Tensor] | tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(data, labels) of one CIFAR batch file; with ``coarse`` also CIFAR-100's superclasses."""
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise DataError(f"dataset file '{path}' is corrupt: expected a pickled dict, got {type(obj).__name__}")
    # the original files have byte-string keys; accept str keys from re-pickled copies
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    needed = ["data", label_key] + (["coarse_labels"] if coarse else [])
    if any(k not in entry for k in needed):
        raise DataError(
            f"dataset file '{path}' is corrupt: needs keys {', '.join(repr(k) for k in needed)}, "
            f"has {sorted(map(str, entry))}"
        )
    data = entry["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"dataset file '{path}' is corrupt: 'data' must be uint8 (N, 3072), got {desc}")
    labels = _labels(entry[label_key], path, len(data), num_classes)
    if coarse:
        return data, labels, _labels(entry["coarse_labels"], path, len(data), CIFAR100_SUPERCLASSES)
    return data, labels


def _cifar(
    cfg: DataConfig,
    name: str,
    folder: str,
    train: list[str],
    test: list[str],
    label_key: str,
    num_classes: int,
    tv_class: str,
    mean: tuple,
    std: tuple,
) -> DatasetBundle:
    where = _root(cfg) / folder

    def fetch(root: Path) -> None:
        import torchvision.datasets as tvd

        for is_train in (True, False):
            getattr(tvd, tv_class)(str(root), train=is_train, download=True)

    paths = _ensure(cfg, name, where, train + test, fetch)

    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_read_cifar_batch(paths[f], label_key, num_classes) for f in files]
        x = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)  # rows are R, G, B planes
        return torch.from_numpy(x), torch.cat([p[1] for p in parts])

    x_tr, y_tr = read(train)
    x_te, y_te = read(test)
    return DatasetBundle(name, x_tr, y_tr, x_te, y_te, num_classes, mean, std, _resolve_augment(cfg, True))


@register(
    "cifar10",
    reads=("root", "download", "augment"),
    key=_file_key,
    spec=lambda cfg: ((3, 32, 32), 10),
    summary="CIFAR-10: 50,000 + 10,000 RGB 32x32 images, 10 classes (torchvision's files)",
    paper="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images",
)
def load_cifar10(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
    """CIFAR-10 (Krizhevsky 2009): 50,000 + 10,000 RGB 32x32 images, 10 classes."""
    return _cifar(
        cfg,
        "cifar10",
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "labels",
        10,
        "CIFAR10",
        CIFAR10_MEAN,
        CIFAR10_STD,
    )


def _check_nesting(fine: np.ndarray, coarse: np.ndarray, path: Path) -> None:
    """DataError unless every fine class has one superclass (CIFAR-100 nests 5 in each)."""
    pairs = np.unique(np.stack([fine, coarse]), axis=1)
    if pairs.shape[1] != len(np.unique(fine)):
        raise DataError(f"dataset file '{path}' is corrupt: a fine class has more than one coarse label")


CIFAR100_SUPERCLASSES = 20


@dataclass
class Cifar100Params(DataConfig):
    """``data.*`` with ``cifar100``: the common keys and which labels to learn."""

    cifar100_labels: str = hp(
        "fine",
        choices=("fine", "coarse"),
        help="train on the 100 fine classes or the 20 superclasses",
        source="the 100 classes of Krizhevsky 2009",
    )


@register(
    "cifar100",
    reads=("root", "download", "augment"),
    key=lambda cfg, seed, n: (*_file_key(cfg, seed, n), cfg.cifar100_labels),
    spec=lambda cfg: ((3, 32, 32), CIFAR100_SUPERCLASSES if cfg.cifar100_labels == "coarse" else 100),
    summary="CIFAR-100: 50,000 + 10,000 RGB 32x32 images, 100 classes in 20 superclasses (torchvision's files)",
    paper="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images",
    Params=Cifar100Params,
)
def load_cifar100(cfg: Cifar100Params, seed: int, n_parties: int) -> DatasetBundle:
    """CIFAR-100 (Krizhevsky 2009): 50,000 + 10,000 RGB 32x32 images in 100 fine classes,
    grouped 5 by 5 into 20 superclasses.

    ``data.cifar100_labels``: ``fine`` trains on the 100 classes, ``coarse`` on the 20
    superclasses. Either way ``superclasses`` gives each training image its superclass,
    so ``partition.by: superclass`` splits by superclass (each party sees some
    superclasses, with all their fine classes).
    """
    where = _root(cfg) / "cifar-100-python"

    def fetch(root: Path) -> None:
        import torchvision.datasets as tvd

        for is_train in (True, False):
            tvd.CIFAR100(str(root), train=is_train, download=True)

    paths = _ensure(cfg, "cifar100", where, ["train", "test"], fetch)
    coarse = cfg.cifar100_labels == "coarse"
    out = []
    for f in ("train", "test"):
        data, fine, sup = _read_cifar_batch(paths[f], "fine_labels", 100, coarse=True)
        _check_nesting(fine.numpy(), sup.numpy(), paths[f])
        out.append((torch.from_numpy(data.reshape(-1, 3, 32, 32)), sup if coarse else fine, sup.numpy()))
    (x_tr, y_tr, s_tr), (x_te, y_te, _) = out
    return DatasetBundle(
        "cifar100",
        x_tr,
        y_tr,
        x_te,
        y_te,
        CIFAR100_SUPERCLASSES if coarse else 100,
        CIFAR100_MEAN,
        CIFAR100_STD,
        _resolve_augment(cfg, True),
        superclasses=s_tr,
    )


# -------------------------------------------------------------------------- MNIST

_IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format, plain or gzipped) of unsigned bytes as an array.

    Header: two zero bytes, the type code (0x08 = unsigned byte), the number of
    dimensions, then each dimension as a big-endian int32; the data follows.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"dataset file '{path}' is corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"dataset file '{path}' is not an idx file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"dataset file '{path}': idx type code 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"dataset file '{path}' is corrupt or truncated (idx header)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"dataset file '{path}' is corrupt or truncated: header says {dims} = {expected} bytes, "
            f"file holds {len(raw) - header}"
        )
    # frombuffer over bytes is read-only; copy once so torch gets writable memory
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _mnist_like(cfg: DataConfig, name: str, folder: str, tv_class: str, mean: tuple, std: tuple) -> DatasetBundle:
    where = _root(cfg) / folder / "raw"

    def fetch(root: Path) -> None:
        import torchvision.datasets as tvd

        for is_train in (True, False):
            getattr(tvd, tv_class)(str(root), train=is_train, download=True)

    paths = _ensure(cfg, name, where, _IDX_FILES, fetch, alternatives=lambda f: [f, f + ".gz"])

    def read(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        ipath, lpath = paths[f"{prefix}-images-idx3-ubyte"], paths[f"{prefix}-labels-idx1-ubyte"]
        x, y = read_idx(ipath), read_idx(lpath)
        if x.ndim != 3:
            raise DataError(f"dataset file '{ipath}' is corrupt: expected (N, H, W) images, got shape {x.shape}")
        if y.ndim != 1:
            raise DataError(f"dataset file '{lpath}' is corrupt: expected (N,) labels, got shape {y.shape}")
        return torch.from_numpy(x).unsqueeze(1), _labels(y, lpath, len(x), 10)

    x_tr, y_tr = read("train")
    x_te, y_te = read("t10k")
    return DatasetBundle(name, x_tr, y_tr, x_te, y_te, 10, mean, std, _resolve_augment(cfg, False))


@register(
    "mnist",
    reads=("root", "download", "augment"),
    key=_file_key,
    spec=lambda cfg: ((1, 28, 28), 10),
    summary="MNIST: 60,000 + 10,000 grey 28x28 digits (torchvision's files)",
    paper="LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition",
)
def load_mnist(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
    """MNIST (LeCun et al. 1998): 60,000 + 10,000 grey 28x28 digits."""
    return _mnist_like(cfg, "mnist", "MNIST", "MNIST", MNIST_MEAN, MNIST_STD)


@register(
    "fmnist",
    reads=("root", "download", "augment"),
    key=_file_key,
    spec=lambda cfg: ((1, 28, 28), 10),
    summary="Fashion-MNIST: 60,000 + 10,000 grey 28x28 clothing images (torchvision's files)",
    paper="Xiao et al. 2017, Fashion-MNIST",
)
def load_fmnist(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 + 10,000 grey 28x28 clothing images."""
    return _mnist_like(cfg, "fmnist", "FashionMNIST", "FashionMNIST", FMNIST_MEAN, FMNIST_STD)


# --------------------------------------------------------------------------- SVHN


def _read_svhn(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... on a bad file
        raise DataError(f"dataset file '{path}' is corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    if "X" not in mat or "y" not in mat:
        raise DataError(f"dataset file '{path}' is corrupt: needs variables 'X' and 'y'")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"dataset file '{path}' is corrupt: 'X' must be uint8 (32, 32, 3, N), got {x.dtype} {x.shape}")
    # (H, W, C, N) -> (N, C, H, W); contiguous so batches index fast
    xt = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1))))
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    if len(y) and (y.min() < 0 or y.max() > 10):
        raise DataError(f"dataset file '{path}' is corrupt: labels outside 1..10")
    return xt, _labels(y % 10, path, len(xt), 10)  # label 10 is the digit 0


@register(
    "svhn",
    reads=("root", "download", "augment"),
    key=_file_key,
    spec=lambda cfg: ((3, 32, 32), 10),
    summary="SVHN cropped digits: 73,257 + 26,032 RGB 32x32 images (torchvision's files)",
    paper="Netzer et al. 2011, Reading Digits in Natural Images with Unsupervised Feature Learning",
)
def load_svhn(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
    """SVHN (Netzer et al. 2011), cropped digits: 73,257 + 26,032 RGB 32x32 images."""
    where = _root(cfg)
    files = ["train_32x32.mat", "test_32x32.mat"]

    def fetch(root: Path) -> None:
        import torchvision.datasets as tvd

        for split in ("train", "test"):
            tvd.SVHN(str(root), split=split, download=True)

    paths = _ensure(cfg, "svhn", where, files, fetch)
    x_tr, y_tr = _read_svhn(paths["train_32x32.mat"])
    x_te, y_te = _read_svhn(paths["test_32x32.mat"])
    return DatasetBundle("svhn", x_tr, y_tr, x_te, y_te, 10, SVHN_MEAN, SVHN_STD, _resolve_augment(cfg, False))


__all__ = [
    "RestrictedUnpickler",
    "safe_load_pickle",
    "read_idx",
    "load_cifar10",
    "load_cifar100",
    "load_mnist",
    "load_fmnist",
    "load_svhn",
]
