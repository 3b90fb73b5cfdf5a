"""Label-distribution skew by Dirichlet proportions (NIID-Bench's ``noniid-labeldir``).

Li, Diao, Chen, He, "Federated Learning on Non-IID Data Silos: An Experimental Study"
(ICDE 2022), after Yurochkin et al. (ICML 2019) and Hsu et al. (2019).

For each class k (ascending), with its n_k samples shuffled: proportions
p ~ Dir(beta * 1_n) over the n parties; a party that already holds >= N/n samples gets
p_j = 0 (then p is renormalised); the class is cut at ``floor(cumsum(p) * n_k)[:-1]``.
The whole draw (all classes) is repeated until every party holds >= ``min_size``
samples. Small beta -> each party sees few classes; beta -> inf -> IID.
"""

from __future__ import annotations

import numpy as np

from ._assign import RandomClassOrder, redraw_batches
from ._validate import no_split_error, redraw_params
from .registry import register


@register("dirichlet", sorted_output=True)
def dirichlet(
    labels: np.ndarray,
    n_parties: int,
    rng: np.random.Generator,
    *,
    beta: float,
    min_size: int = 10,
    max_redraws: int = 1000,
) -> dict[int, np.ndarray]:
    """NIID-Bench Dirichlet label skew; every sample is assigned.

    The redraw loop only computes the ``classes x parties`` count matrix (a batch of
    candidate draws at a time, looping over classes, never over samples); the indices
    are materialised once from the accepted count matrix. Classes are the distinct
    labels present (absent labels draw nothing). ValueError if no draw out of
    ``max_redraws`` gives every party ``min_size`` samples.
    """
    n_samples = labels.size
    beta, min_size, max_redraws = redraw_params(beta, min_size, max_redraws, n_parties, n_samples)

    # the within-class random order first: counting its buckets gives the class sizes
    order = RandomClassOrder.draw(labels, rng)
    sizes = order.sizes
    n_classes = len(sizes)
    for batch in redraw_batches(max_redraws, n_classes * n_parties):
        cuts, held = _draw_cuts(sizes, n_parties, beta, batch, rng)
        ok = np.flatnonzero(held.min(axis=1) >= min_size)
        if ok.size:
            accepted = cuts[:, ok[0], :]
            return order.deal(accepted[:, 1:] - accepted[:, :-1], rng)
    raise no_split_error("dirichlet", beta, min_size, max_redraws, n_parties, n_samples)


# Below this beta, Gamma(beta) variates underflow often enough that proportions are drawn
# with Generator.dirichlet (stick-breaking for beta < 0.1) instead of from gammas.
_GAMMA_MIN_BETA = 0.1


def _draw_cuts(
    sizes: np.ndarray, n_parties: int, beta: float, batch: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` independent NIID-Bench draws, vectorised over the batch: the cut points
    (K, batch, n_parties + 1) of each class (``np.diff`` gives the counts) and each
    party's total (batch, n_parties). The loop body is seven allocation-free numpy calls
    on float64/int64 arrays (it runs K times per batch and dominates small problems)."""
    n_classes = len(sizes)
    if beta >= _GAMMA_MIN_BETA:
        # Dir(beta 1_n) = gammas / their sum, and the cuts below normalise by the sum of
        # the eligible ones anyway. float32 gammas: ~1.5x faster; a proportion that
        # underflows (< 1e-38, probability 2e-4 at beta = 0.1) gets no sample either way
        props = rng.standard_gamma(beta, size=(n_classes, batch, n_parties), dtype=np.float32)
    else:
        # Generator.dirichlet uses stick-breaking for beta < 0.1, where Gamma(beta)
        # variates would all underflow to 0 (beta = 1e-6 would look IID)
        props = rng.dirichlet(np.full(n_parties, beta), size=(n_classes, batch))
    # classes with a proportion of exactly 0 (where a whole row may have underflowed)
    underflow = (props == 0).any(axis=(1, 2)).tolist()
    # the loop multiplies float64 by float64: no mixed-type (buffered) ufunc loops
    props = props.astype(np.float64, copy=False)
    # held < N/n  <=>  held < ceil(N/n) for integer held: an int64 comparison. Operands
    # are arrays, not Python scalars: ufuncs convert a scalar on every call
    cap = np.full((batch, n_parties), -(-int(sizes.sum()) // n_parties))
    n_k_arrays = sizes.astype(np.float64)[:, None]
    # cuts[k, b] = 0, floor(cumsum(p) * n_k)[:-1], n_k: NIID-Bench's split points
    cuts = np.empty((n_classes, batch, n_parties + 1), dtype=np.int64)
    cuts[:, :, 0] = 0
    cuts[:, :, -1] = sizes[:, None]
    held = np.zeros((batch, n_parties), dtype=np.int64)
    eligible = np.ones((batch, n_parties))  # 1.0 / 0.0; all eligible for the first class
    p = np.empty((batch, n_parties))
    p_inner, p_total = p[:, :-1], p[:, -1:]
    scale = np.empty((batch, 1))
    # per-class views made once: the loop runs K times per batch
    classes = zip(props, cuts[:, :, 1:-1], cuts[:, :, 1:], cuts[:, :, :-1], n_k_arrays, underflow)
    for k, (props_k, inner_k, hi_k, lo_k, n_k, underflow_k) in enumerate(classes):
        if k:
            np.less(held, cap, eligible)  # parties already holding N/n get no more
            np.multiply(props_k, eligible, p)
            np.add.accumulate(p, 1, None, p)
        else:
            np.add.accumulate(props_k, 1, None, p)
        if underflow_k and not p_total.all():
            _redraw_dead_rows(p, eligible, beta, rng)
        np.divide(n_k, p_total, scale)
        np.multiply(p_inner, scale, inner_k, casting="unsafe")  # floor (p >= 0)
        np.add(held, hi_k, held)
        np.subtract(held, lo_k, held)
    return cuts, held


def _redraw_dead_rows(cum: np.ndarray, eligible: np.ndarray, beta: float, rng: np.random.Generator) -> None:
    """Rows whose eligible proportions (``eligible``: 1.0 or 0.0) all underflowed to 0 get
    fresh Dir(beta) proportions over their eligible parties. Exact: the renormalised
    eligible part of a Dir(beta * 1_n) vector is Dir(beta * 1_m), independent of the
    other parties'."""
    for b in np.flatnonzero(cum[:, -1] == 0).tolist():
        row = np.zeros(cum.shape[1])
        alive = eligible[b] > 0
        row[alive] = rng.dirichlet(np.full(int(alive.sum()), beta))
        np.cumsum(row, out=cum[b])
