"""Quantity-based label imbalance, "#C = k" (NIID-Bench's ``noniid-#label<k>``).

Li et al., "Federated Learning on Non-IID Data Silos: An Experimental Study" (ICDE 2022):
party i holds class ``i mod K`` and ``C - 1`` other distinct classes chosen uniformly
at random; each class is shuffled and split equally (``np.array_split``) among the
parties that hold it.
"""

from __future__ import annotations

import numpy as np

from ._validate import as_int
from .registry import register
from .split import deal_classes, shuffled_by_class


@register(
    "label-quantity",
    sorted_output=True,
    summary="#C: each party holds classes_per_party classes, each class split equally among its holders",
    paper="Li et al. 2022, Federated Learning on Non-IID Data Silos (NIID-Bench)",
)
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
    ids, sizes = shuffled_by_class(labels, rng)
    n_classes = len(sizes)
    c = as_int("partition.classes_per_party", classes_per_party, 1, n_classes, why=" (the number of distinct labels)")
    holds = held_classes(n_parties, n_classes, c, rng)

    # np.array_split of class k among its h_k holders (ascending party id): each gets
    # n_k // h_k samples, and the first n_k mod h_k of them one more
    holders = holds.sum(axis=0)
    rank = np.cumsum(holds, axis=0) - 1  # a holder's rank among the class's holders
    per_holder, extra = np.divmod(sizes, np.maximum(holders, 1))
    counts = np.where(holds, per_holder + (rank < extra), 0)
    return deal_classes(ids, sizes, counts.T)


def held_classes(n_parties: int, n_classes: int, c: int, rng: np.random.Generator) -> np.ndarray:
    """``holds[i, k]``: whether party i holds class k; party i holds class ``i mod K`` and
    ``c - 1`` of the other classes, uniformly at random (``n_parties x n_classes``)."""
    own = np.arange(n_parties) % n_classes
    # a party's classes in a uniformly random order with its own class first (key -1):
    # the first c are its own class and a uniform random (c - 1)-subset of the others
    keys = rng.random((n_parties, n_classes))
    keys[np.arange(n_parties), own] = -1.0
    chosen = np.argsort(keys, axis=1)[:, :c]
    holds = np.zeros((n_parties, n_classes), dtype=bool)
    np.put_along_axis(holds, chosen, True, axis=1)
    return holds
