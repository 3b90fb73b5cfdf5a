"""Input checks shared by the schemes: one-line ValueErrors naming the parameter."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


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
