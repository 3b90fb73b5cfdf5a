"""Label-distribution skew by Dirichlet proportions (NIID-Bench's ``noniid-labeldir``).

Li, Diao, Chen, He, "Federated Learning on Non-IID Data Silos: An Experimental Study"
(ICDE 2022), after Yurochkin et al. (ICML 2019) and Hsu, Qi, Brown, "Measuring the
Effects of Non-Identical Data Distribution for Federated Visual Classification" (2019).

For each class k (ascending), with its n_k samples shuffled: proportions
p ~ Dir(beta * 1_n) over the n parties; a party that already holds >= N/n samples gets
p_j = 0 (then p is renormalised); the class is cut at ``floor(cumsum(p) * n_k)[:-1]``.
The whole draw (all classes) is repeated until every party holds >= ``min_size``
samples. Small beta -> each party sees few classes; beta -> inf -> IID.
"""

from __future__ import annotations

import numpy as np

from ._validate import MAX_REDRAWS, Redraws, no_split_error, redraw_params
from .registry import register
from .split import deal_classes, shuffled_by_class


@register(
    "dirichlet",
    sorted_output=True,
    summary="label skew: per class, proportions ~ Dir(beta) over the parties; redraw until each has min_size",
    paper="Li et al. 2022, Federated Learning on Non-IID Data Silos (NIID-Bench)",
)
def dirichlet(
    labels: np.ndarray,
    n_parties: int,
    rng: np.random.Generator,
    *,
    beta: float,
    min_size: int = 10,
    max_redraws: int = MAX_REDRAWS,
) -> dict[int, np.ndarray]:
    """NIID-Bench Dirichlet label skew; every sample is assigned.

    Classes are the distinct labels present. ValueError if no draw out of
    ``max_redraws`` gives every party ``min_size`` samples.
    """
    n_samples = labels.size
    beta, min_size, max_redraws = redraw_params(beta, min_size, max_redraws, n_parties, n_samples)
    # NIID-Bench reshuffles each class on every redraw; shuffling once is the same law,
    # since whether a draw is accepted depends on its counts only, not on the order
    ids, sizes = shuffled_by_class(labels, rng)
    draws = Redraws("dirichlet", max_redraws, min_size)
    for i in draws:
        counts = draw_class_counts(sizes, n_parties, beta, rng)
        if counts.sum(axis=0).min() >= min_size:
            draws.found(i)
            return deal_classes(ids, sizes, counts)
    raise no_split_error("dirichlet", beta, min_size, max_redraws, n_parties, n_samples)


def draw_class_counts(sizes: np.ndarray, n_parties: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """One NIID-Bench draw: ``counts[k, j]``, the samples of class k that party j gets
    (``n_classes x n_parties``, each row summing to ``sizes[k]``)."""
    cap = sizes.sum() / n_parties  # N/n
    counts = np.zeros((len(sizes), n_parties), dtype=np.int64)
    held = np.zeros(n_parties, dtype=np.int64)
    for k, n_k in enumerate(sizes):
        # p ~ Dir(beta) over the parties below the cap, who share the class: the law of
        # NIID-Bench's "draw over all parties, zero the full ones, renormalise" (the
        # renormalised part of a Dirichlet vector is Dirichlet). Without its 0/0 when a
        # tiny beta leaves every open party's proportion at 0.0, and without handing a
        # full last party the sample that float rounding leaves over
        open_parties = np.flatnonzero(held < cap)
        p = rng.dirichlet(np.full(open_parties.size, beta))
        cuts = (np.cumsum(p)[:-1] * n_k).astype(np.int64)  # floor: p >= 0
        counts[k, open_parties] = np.diff(cuts, prepend=0, append=n_k)
        held += counts[k]
    return counts
