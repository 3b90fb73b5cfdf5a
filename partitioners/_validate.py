"""Input checks shared by the schemes: one-line ValueErrors naming the parameter."""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

log = logging.getLogger("partitioners")


def check_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """``labels`` as a C-contiguous int64 array; ValueError unless it is a non-empty 1-D
    integer array of class ids >= 0 (floats and booleans are refused, not rounded)."""
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu" or arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D integer array of class ids >= 0; got a {arr.dtype} array of shape {arr.shape}"
        )
    if arr.dtype.kind == "i" and arr.min() < 0:
        raise ValueError(f"{name} must be class ids >= 0; got a negative label {int(arr.min())}")
    if arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must be class ids that fit in int64; got {int(arr.max())}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_int(name: str, value: Any, lo: int | None = None, hi: int | None = None, why: str = "") -> int:
    """``value`` as an int within [lo, hi]; an integral float (``2.0``) is accepted, a bool is not."""
    # type(...) is int first: the numbers.Integral ABC check costs microseconds a call
    ok = type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)))
    if not ok and isinstance(value, float) and value.is_integer():
        ok = True
    if not ok:
        raise ValueError(f"{name} must be an integer{_range(lo, hi)}; got {value!r}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} must be an integer{_range(lo, hi)}{why}; got {v}")
    return v


def as_positive_float(name: str, value: Any) -> float:
    """``value`` as a finite float > 0."""
    if type(value) is not float and (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)):
        raise ValueError(f"{name} must be a number > 0; got {value!r}")
    v = float(value)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0; got {v!r}")
    return v


def _range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def check_min_size(min_size: Any, n_parties: int, n_samples: int) -> int:
    """``partition.min_size`` as an int in 0..n_samples // n_parties."""
    v = as_int("partition.min_size", min_size, 0)
    if n_parties * v > n_samples:
        raise ValueError(
            f"partition.min_size must be in 0..{n_samples // n_parties} "
            f"(n_parties * min_size <= {n_samples} samples, n_parties={n_parties}); got {v}"
        )
    return v


def redraw_params(beta: Any, min_size: Any, max_redraws: Any, n_parties: int, n_samples: int) -> tuple[float, int, int]:
    """``(beta, min_size, max_redraws)`` of a scheme that redraws Dirichlet proportions
    until every party holds ``min_size`` samples, validated."""
    return (
        as_positive_float("partition.beta", beta),
        check_min_size(min_size, n_parties, n_samples),
        as_int("partition.max_redraws", max_redraws, 1),
    )


#: redraws a Dirichlet scheme tries before it gives up (``partition.max_redraws``):
#: NIID-Bench's own loop needed 831-4,327 draws for 100 parties, beta 0.1, min_size 10
#: on MNIST's 10,000 test labels (seeds 0-4), at about 0.25 ms a draw
MAX_REDRAWS = 100_000


class Redraws:
    """The draws of a redrawing scheme, up to ``max_redraws``: iterate over it and call
    :meth:`found` on success. After ``report_after`` seconds without a split it says once,
    on the ``partitioners`` logger, that it is drawing on, and then after how many draws
    the split came."""

    def __init__(self, scheme: str, max_redraws: int, min_size: int, report_after: float = 1.0) -> None:
        self.scheme, self.max_redraws, self.min_size = scheme, max_redraws, min_size
        self.report_after = report_after
        self.start = time.monotonic()
        self.told = False

    def __iter__(self) -> Iterator[int]:
        for i in range(self.max_redraws):
            if not self.told and i % 256 == 255 and time.monotonic() - self.start > self.report_after:
                self.told = True
                log.warning(
                    "partition %s: %d draws so far without every party >= min_size=%d; drawing on "
                    "(at most partition.max_redraws=%d)",
                    self.scheme,
                    i,
                    self.min_size,
                    self.max_redraws,
                )
            yield i

    def found(self, i: int) -> None:
        if self.told:
            log.warning(
                "partition %s: split found after %d draws (%.1f s)", self.scheme, i + 1, time.monotonic() - self.start
            )


def no_split_error(
    scheme: str, beta: float, min_size: int, max_redraws: int, n_parties: int, n_samples: int
) -> ValueError:
    """The error of a redrawing scheme whose ``max_redraws`` draws all failed, naming the
    parameters to change."""
    return ValueError(
        f"{scheme}: no split with every party >= min_size={min_size} after {max_redraws} draws "
        f"(beta={beta:g}, {n_parties} parties, {n_samples} samples): lower partition.min_size, "
        f"raise partition.beta or use fewer partition.n_parties"
    )
