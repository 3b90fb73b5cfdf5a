"""Quantity skew: party sizes ~ Dir(beta), labels IID (NIID-Bench's ``iid-diff-quantity``).

Li et al., "Federated Learning on Non-IID Data Silos: An Experimental Study" (ICDE 2022):
proportions q ~ Dir(beta * 1_n), redrawn until every party gets >= ``min_size``
samples; a random permutation of all samples is cut at ``floor(cumsum(q) * N)[:-1]``.
"""

from __future__ import annotations

import numpy as np

from ._assign import random_split, redraw_batches
from ._validate import no_split_error, redraw_params
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
    n_samples = labels.size
    beta, min_size, max_redraws = redraw_params(beta, min_size, max_redraws, n_parties, n_samples)

    alpha = np.full(n_parties, beta)
    for batch in redraw_batches(max_redraws, n_parties):
        cuts = (np.cumsum(rng.dirichlet(alpha, size=batch), axis=1) * n_samples).astype(np.int64)
        np.minimum(cuts, n_samples, out=cuts)
        cuts[:, -1] = n_samples
        sizes = np.diff(cuts, axis=1, prepend=0)
        ok = np.flatnonzero(sizes.min(axis=1) >= min_size)
        if ok.size:
            return random_split(n_samples, sizes[ok[0]], rng)
    raise no_split_error("quantity-skew", beta, min_size, max_redraws, n_parties, n_samples)
