"""Quantity skew: party sizes ~ Dir(beta), labels IID (NIID-Bench's ``iid-diff-quantity``).

Li et al., "Federated Learning on Non-IID Data Silos: An Experimental Study" (ICDE 2022):
proportions q ~ Dir(beta * 1_n), redrawn until every party gets >= ``min_size``
samples; a random permutation of all samples is cut at ``floor(cumsum(q) * N)[:-1]``.
"""

from __future__ import annotations

import numpy as np

from ._validate import MAX_REDRAWS, Redraws, no_split_error, redraw_params
from .registry import register


@register(
    "quantity-skew",
    sorted_output=True,
    uses_labels=False,
    summary="party sizes ~ Dir(beta), labels IID",
    paper="Li et al. 2022, Federated Learning on Non-IID Data Silos (NIID-Bench)",
)
def quantity_skew(
    labels: np.ndarray,
    n_parties: int,
    rng: np.random.Generator,
    *,
    beta: float,
    min_size: int = 10,
    max_redraws: int = MAX_REDRAWS,
) -> dict[int, np.ndarray]:
    """Dirichlet party sizes with IID labels; every sample is assigned.

    Unlike NIID-Bench, which tests ``min(q) * N``, the integer sizes themselves are
    tested against ``min_size``, so the guarantee holds exactly. ValueError if no draw
    out of ``max_redraws`` satisfies it.
    """
    n_samples = labels.size
    beta, min_size, max_redraws = redraw_params(beta, min_size, max_redraws, n_parties, n_samples)
    draws = Redraws("quantity-skew", max_redraws, min_size)
    for i in draws:
        q = rng.dirichlet(np.full(n_parties, beta))
        cuts = (np.cumsum(q)[:-1] * n_samples).astype(np.int64)  # floor: q >= 0
        if np.diff(cuts, prepend=0, append=n_samples).min() >= min_size:
            draws.found(i)
            parts = np.split(rng.permutation(n_samples), cuts)
            return {j: np.sort(part) for j, part in enumerate(parts)}
    raise no_split_error("quantity-skew", beta, min_size, max_redraws, n_parties, n_samples)
