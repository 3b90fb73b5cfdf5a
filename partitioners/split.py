"""The steps the label-skew schemes share, as plain numpy.

NIID-Bench (Li et al., ICDE 2022) partitions a class at a time: shuffle the class's
sample ids, then cut them at the parties' cumulative counts. Here that is
:func:`shuffled_by_class` (all classes' shuffled ids at once) and :func:`deal_classes`
(the cut), and :func:`by_owner` turns "which party holds sample i" into each party's
sorted index array.
"""

from __future__ import annotations

import numpy as np

from .io import FlatPartition


def shuffled_by_class(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, sizes)``: every sample id, grouped by class (distinct labels ascending) and
    in uniformly random order within its class; ``sizes[k]`` samples of the k-th class.

    NIID-Bench's ``idx_k = np.where(y == k)[0]; np.random.shuffle(idx_k)`` for all classes
    at once: a random permutation of the ids, stably sorted by label, keeps each class in
    the random order of the permutation.
    """
    perm = rng.permutation(labels.size)
    ids = perm[np.argsort(labels[perm], kind="stable")]
    _, sizes = np.unique(labels, return_counts=True)
    return ids, sizes


def deal_classes(ids: np.ndarray, sizes: np.ndarray, counts: np.ndarray) -> FlatPartition:
    """Cut each class's block of ``ids`` (as :func:`shuffled_by_class` returns them) into
    runs of ``counts[k, 0], counts[k, 1], ...`` samples for parties 0, 1, ...; the
    ``sizes[k] - counts[k].sum()`` samples after the last run are left out.

    ``counts``: integers, ``n_classes x n_parties``. Returns party -> int64 ids, ascending.
    """
    n_classes, n_parties = counts.shape
    # per class, the runs of parties 0..n-1 and then the rest, as "party" n (left out)
    runs = np.column_stack([counts, sizes - counts.sum(axis=1)])
    owner = np.empty(ids.size, dtype=np.int64)
    owner[ids] = np.repeat(np.tile(np.arange(n_parties + 1), n_classes), runs.ravel())
    return by_owner(owner, n_parties)


def by_owner(owner: np.ndarray, n_parties: int) -> FlatPartition:
    """``owner[i]``: the party of sample i, or ``n_parties`` for a sample left out ->
    ``{j: the ids of party j, ascending}`` (int64, as views of one array)."""
    # numpy's stable argsort is a radix sort for integers of <= 16 bits: 1M owners of
    # 1,000 parties sort in ~12 ms as uint16, ~59 ms as int64; the goal case of
    # benchmarks/partition_speed.py takes ~125 ms with this cast, ~170 ms without
    owner = owner.astype(np.min_scalar_type(n_parties), copy=False)
    order = np.argsort(owner, kind="stable")  # stable: ids stay ascending within a party
    counts = np.bincount(owner, minlength=n_parties + 1)[:n_parties]
    return FlatPartition.from_sizes(order[: counts.sum()], counts.astype(np.int64))
