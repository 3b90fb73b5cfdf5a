"""Data heterogeneity of a partition: how far each party's data is from the whole.

Party k has the class-count vector ``c_k`` (n_k = sum c_k samples) and label
distribution ``p_k = c_k / n_k``; ``q`` is the label distribution of the whole
``labels`` array. Per party (parties with n_k = 0 are left out of the distance and
entropy statistics, but count in the size statistics and have 0 classes):

- total variation ``TV = 0.5 * sum_c |p_c - q_c|`` in [0, 1] — the earth mover's
  distance over classes with a 0/1 ground distance;
- Jensen-Shannon *distance* ``JS = sqrt(0.5 KL(p||m) + 0.5 KL(q||m))``, ``m = (p + q)/2``,
  base-2 logs, in [0, 1] (Lin 1991; Endres & Schindelin 2003);
- Hellinger ``H = sqrt(1 - sum_c sqrt(p_c q_c))`` in [0, 1];
- effective number of classes ``exp(-sum_c p_c ln p_c)`` (Hill number of order 1):
  1 for a one-class party, K for a uniform one;
- classes per party: the number of classes with a count > 0.

Sizes: mean, population std (ddof=0), CV = std / mean, min, max. NIID-Bench (Li et al.,
ICDE 2022) reports the class-count table; these summarise it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._validate import as_int, check_labels
from .io import FlatPartition


def class_count_matrix(
    labels: np.ndarray, dataidxs: Mapping[int, Any], num_classes: int
) -> tuple[list[int], np.ndarray]:
    """``(party ids ascending, parties x classes int64 counts)``, one bincount, no loop over samples."""
    if isinstance(dataidxs, FlatPartition):  # already one array: no loop over parties either
        return list(range(len(dataidxs))), _bincount_rows(
            labels, dataidxs.indices, np.diff(dataidxs.offsets), num_classes
        )
    parties = sorted(dataidxs)
    arrays = []
    for p in parties:
        a = np.asarray(dataidxs[p])
        if a.size == 0:
            a = a.astype(np.int64)
        if a.dtype.kind not in "iu" or a.ndim != 1:
            raise ValueError(f"dataidxs[{p}] must be a 1-D integer index array; got {a.dtype} of shape {a.shape}")
        arrays.append(a.astype(np.int64, copy=False))
    sizes = np.array([a.size for a in arrays], dtype=np.int64)
    idx = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    return parties, _bincount_rows(labels, idx, sizes, num_classes)


def _bincount_rows(labels: np.ndarray, idx: np.ndarray, sizes: np.ndarray, num_classes: int) -> np.ndarray:
    """The class counts of consecutive runs of ``sizes[j]`` entries of ``idx``."""
    if idx.size and (idx.min() < 0 or idx.max() >= labels.size):
        raise ValueError(f"dataidxs hold an index outside 0..{labels.size - 1}")
    rows = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    flat = np.bincount(rows * num_classes + labels[idx], minlength=sizes.size * num_classes)
    return flat.reshape(sizes.size, num_classes)


def heterogeneity(
    labels: Any, dataidxs: Mapping[int, Any], num_classes: int | None = None, class_counts: bool = True
) -> dict[str, Any]:
    """Heterogeneity statistics of ``dataidxs`` (party -> indices into ``labels``).

    Returns a flat JSON-serialisable dict: ``n_parties, n_samples`` (assigned samples),
    ``n_classes`` (``num_classes``, default max label + 1), ``class_counts`` (parties x
    classes, parties in ascending id order), ``size_mean, size_std, size_cv, size_min,
    size_max, classes_per_party_mean/min/max, tv_mean, tv_max, js_mean, js_max,
    hellinger_mean, hellinger_max, effective_classes_mean, effective_classes_min,
    global_effective_classes``. The distance/entropy entries are None when every party
    is empty. See the module docstring for the definitions. ``class_counts=False``
    leaves the table out (None; a million parties' is ten million numbers).
    """
    labels = check_labels(labels)
    top = int(labels.max()) + 1
    k = top if num_classes is None else as_int("num_classes", num_classes, top)
    if len(dataidxs) == 0:
        raise ValueError("dataidxs must hold at least one party")
    _, counts = class_count_matrix(labels, dataidxs, k)
    sizes = counts.sum(axis=1)
    q = np.bincount(labels, minlength=k) / labels.size
    p = counts[sizes > 0] / sizes[sizes > 0, None]
    out = _size_stats(counts, k)
    out["class_counts"] = out["class_counts"].tolist() if class_counts else None
    out.update(_distance_stats(p, q))
    out["global_effective_classes"] = float(np.exp(_entropy(q[None, :])[0]))
    return out


#: the distance and entropy statistics, None when every party is empty
_DISTANCE_KEYS = (
    "tv_mean",
    "tv_max",
    "js_mean",
    "js_max",
    "hellinger_mean",
    "hellinger_max",
    "effective_classes_mean",
    "effective_classes_min",
)


def _size_stats(counts: np.ndarray, k: int) -> dict[str, Any]:
    """The counts, the parties' sizes and their classes per party."""
    sizes = counts.sum(axis=1)
    mean = float(sizes.mean())
    std = float(sizes.std())
    present = (counts > 0).sum(axis=1)
    return {
        "n_parties": int(len(sizes)),
        "n_samples": int(sizes.sum()),
        "n_classes": int(k),
        "class_counts": counts,
        "size_mean": mean,
        "size_std": std,
        "size_cv": std / mean if mean > 0 else 0.0,
        "size_min": int(sizes.min()),
        "size_max": int(sizes.max()),
        "classes_per_party_mean": float(present.mean()),
        "classes_per_party_min": int(present.min()),
        "classes_per_party_max": int(present.max()),
    }


def _distance_stats(p: np.ndarray, q: np.ndarray) -> dict[str, float | None]:
    """Mean and max (min for the effective classes) over the non-empty parties' label
    distributions ``p`` of their distances to ``q``."""
    if not p.shape[0]:
        return dict.fromkeys(_DISTANCE_KEYS)
    tv, js, hel, eff = _distances(p, q)
    values = (tv.mean(), tv.max(), js.mean(), js.max(), hel.mean(), hel.max(), eff.mean(), eff.min())
    return {key: float(v) for key, v in zip(_DISTANCE_KEYS, values)}


def _entropy(p: np.ndarray) -> np.ndarray:
    """Row-wise natural-log entropy, 0 ln 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)


def _kl2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise KL(a || b) in bits, 0 log 0 = 0 (b > 0 wherever a > 0 here)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, a * np.log2(a / b), 0.0).sum(axis=1)


def _distances(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TV, JS distance, Hellinger and effective classes of each row of ``p`` against ``q``."""
    qq = np.broadcast_to(q, p.shape)
    tv = 0.5 * np.abs(p - qq).sum(axis=1)
    m = 0.5 * (p + qq)
    js = np.sqrt(np.clip(0.5 * _kl2(p, m) + 0.5 * _kl2(qq, m), 0.0, 1.0))
    hel = np.sqrt(np.clip(1.0 - np.sqrt(p * qq).sum(axis=1), 0.0, 1.0))
    eff = np.exp(_entropy(p))
    return tv, js, hel, eff
