"""Power-of-Choice (Cho, Wang, Joshi 2022, "Towards Understanding Biased Client Selection
in Federated Learning", AISTATS; pow-d of arXiv 2010.01243).

Each round the server

1. samples a candidate set A of d parties without replacement, party k with probability
   p_k = n_k / sum_j n_j (its share of the samples);
2. sends them the current global model w^t and receives F_k(w^t), the loss of w^t on
   each candidate's training data (a query round trip: its bytes count in the round's
   ``bytes_down`` and ``bytes_up``);
3. trains the m candidates with the highest F_k(w^t) (ties: the lower party id).

Biasing the cohort towards high local loss speeds up convergence (the paper: up to 3x
fewer rounds) at the price of a bias in the solution it converges to. The paper's d is
2m on FMNIST (K = 100, m = 3, d in {6, 9, 15}); ``selection.d`` 0 takes 2m. With d = m
every candidate trains: no probe is sent, and with equally sized parties the candidate
draw is the uniform one, so d = m is uniform selection, cohort for cohort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import Pool, SelectionParams, Selector, hp, register, uniform_draw


@dataclass
class PowerOfChoiceParams(SelectionParams):
    d: int = hp(
        0,
        ge=0,
        help="candidates sampled by data size, of which the m with the highest loss train; 0: 2m",
        source="Cho et al. 2022 (d = 2m on FMNIST: m = 3, d in {6, 9, 15})",
    )


def candidate_count(d: int, m: int, n: int) -> int:
    """|A|: ``d`` (0: 2m), at least m and at most the n parties that may train."""
    return min(n, max(m, d if d > 0 else 2 * m))


def candidates(pool: Pool, d: int) -> list[int]:
    """A: d of the pool's parties without replacement, by data size (uniform when all
    parties hold equally many samples: then the draw is :func:`uniform_draw`'s)."""
    sizes = np.asarray([pool.sizes[p] for p in pool.parties], dtype=np.float64)
    if sizes.size == 0 or np.all(sizes == sizes[0]) or sizes.sum() <= 0:
        return uniform_draw(pool.parties, d, pool.rng)
    if d >= len(pool.parties):
        return list(pool.parties)
    chosen = pool.rng.choice(len(pool.parties), size=d, replace=False, p=sizes / sizes.sum())
    return sorted(pool.parties[i] for i in chosen)


@register
class PowerOfChoice(Selector):
    name = "power-of-choice"
    summary = "d candidates by data size, the m with the highest loss of the global model train"
    paper = "Cho, Wang, Joshi 2022, Towards Understanding Biased Client Selection in Federated Learning"
    Params = PowerOfChoiceParams
    probes = True

    def select(self, params: Any, pool: Pool) -> list[int]:
        d = candidate_count(int(params.d), pool.m, len(pool.parties))
        found = candidates(pool, d)
        if len(found) <= pool.m or pool.probe is None:
            return found[: pool.m] if len(found) > pool.m else found
        losses = pool.probe(found)
        # a candidate that did not answer (failed) is not chosen before one that did
        ranked = sorted(found, key=lambda p: (-losses.get(p, -np.inf), p))
        return sorted(ranked[: pool.m])
