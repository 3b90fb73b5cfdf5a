"""Quantity-based label imbalance, "#C = k" (NIID-Bench's ``noniid-#label<k>``).

Li et al., "Federated Learning on Non-IID Data Silos: An Experimental Study" (ICDE 2022):
party i holds class ``i mod K`` and ``C - 1`` other distinct classes chosen uniformly
at random; each class is shuffled and split equally (``np.array_split``) among the
parties that hold it.
"""

from __future__ import annotations

import numpy as np

from ._assign import RandomClassOrder
from ._validate import as_int
from .registry import register


@register("label-quantity", sorted_output=True)
def label_quantity(
    labels: np.ndarray,
    n_parties: int,
    rng: np.random.Generator,
    *,
    classes_per_party: int,
) -> dict[int, np.ndarray]:
    """Each party holds exactly ``classes_per_party`` (C) distinct classes.

    K is the number of *distinct* labels present and "class i mod K" is the
    (i mod K)-th smallest of them, so C ranges over 1..K. A class that no party holds
    (possible when n_parties < K) is left out: this scheme may leave samples unassigned.
    A party holds C classes but gets no sample of one of them when that class has
    fewer samples than holders.
    """
    order = RandomClassOrder.draw(labels, rng)
    sizes = order.sizes
    n_classes = len(sizes)
    c = as_int("partition.classes_per_party", classes_per_party, 1, n_classes,
               why=" (the number of distinct labels)")
    holds = np.zeros((n_parties, n_classes), dtype=bool)
    own = np.arange(n_parties) % n_classes
    chunk = max(1, (1 << 22) // n_classes)
    for lo in range(0, n_parties, chunk):
        rows = np.arange(lo, min(lo + chunk, n_parties))
        # random keys; the party's own class gets -1 so it is always among the C smallest,
        # the other C-1 are then a uniform random subset of the remaining classes
        keys = rng.random((rows.size, n_classes))
        keys[np.arange(rows.size), own[rows]] = -1.0
        chosen = np.argpartition(keys, c - 1, axis=1)[:, :c] if c < n_classes else None
        if chosen is None:
            holds[rows] = True
        else:
            holds[rows[:, None], chosen] = True

    # np.array_split of class k among its holders (ascending party id): the first
    # n_k mod h_k holders get one sample more
    holders = holds.sum(axis=0)
    rank = np.cumsum(holds, axis=0) - 1
    safe = np.maximum(holders, 1)
    base, extra = sizes // safe, sizes % safe
    counts = np.where(holds, base + (rank < extra), 0).T
    return order.deal(np.ascontiguousarray(counts), rng)
