"""Quantity skew: party sizes ~ Dir(beta), labels IID (NIID-Bench's ``iid-diff-quantity``).

Li et al., "Federated Learning on Non-IID Data Silos: An Experimental Study" (ICDE 2022):
proportions q ~ Dir(beta * 1_n), redrawn until every party gets >= ``min_size``
samples; a random permutation of all samples is cut at ``floor(cumsum(q) * N)[:-1]``.
"""

from __future__ import annotations

import numpy as np

from ._assign import dataidxs_from_assignment, redraw_batches, small_uint
from ._validate import as_int, as_positive_float, check_min_size
from .registry import register


@register("quantity-skew", sorted_output=True)
def quantity_skew(
    labels: np.ndarray,
    n_parties: int,
    rng: np.random.Generator,
    *,
    beta: float,
    min_size: int = 10,
    max_redraws: int = 1000,
) -> dict[int, np.ndarray]:
    """Dirichlet party sizes with IID labels; every sample is assigned.

    Unlike NIID-Bench, which tests ``min(q) * N``, the integer sizes themselves are
    tested against ``min_size``, so the guarantee holds exactly. ValueError if no draw
    out of ``max_redraws`` satisfies it.
    """
    beta = as_positive_float("partition.beta", beta)
    n_samples = labels.size
    min_size = check_min_size(min_size, n_parties, n_samples)
    max_redraws = as_int("partition.max_redraws", max_redraws, 1)

    alpha = np.full(n_parties, beta)
    for batch in redraw_batches(max_redraws, n_parties):
        cuts = (np.cumsum(rng.dirichlet(alpha, size=batch), axis=1) * n_samples).astype(np.int64)
        np.minimum(cuts, n_samples, out=cuts)
        cuts[:, -1] = n_samples
        sizes = np.diff(cuts, axis=1, prepend=0)
        ok = np.flatnonzero(sizes.min(axis=1) >= min_size)
        if ok.size:
            dtype = small_uint(n_parties + 1)
            assign = np.empty(n_samples, dtype=dtype)
            assign[rng.permutation(n_samples)] = np.repeat(np.arange(n_parties, dtype=dtype), sizes[ok[0]])
            return dataidxs_from_assignment(assign, n_parties)
    raise ValueError(
        f"quantity-skew: no split with every party >= min_size={min_size} after {max_redraws} draws "
        f"(beta={beta:g}, {n_parties} parties, {n_samples} samples): lower partition.min_size, "
        f"raise partition.beta or use fewer partition.n_parties"
    )
