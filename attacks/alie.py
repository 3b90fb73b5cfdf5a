"""A Little Is Enough (Baruch, Baruch and Goldberg 2019): every malicious party sends

    d_mal = mu - z sigma

with mu and sigma the coordinate-wise mean and standard deviation (ddof = 1, as in
Karimireddy et al.'s code) of the round's honest updates. A shift of z standard
deviations per coordinate stays inside the spread that the median, the trimmed mean
and Krum accept, yet moves every coordinate the same way. The default z is the paper's
z_max for n replies of which m are malicious:

    s = floor(n / 2 + 1) - m,   z_max = Phi^-1((n - s) / n)

(s is clamped to [1, n - 1] when the attackers hold a majority). The attackers are
omniscient: the simulation computes mu and sigma at the server from the honest
replies of the cohort (registry docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from strategies.params import hp

from .params import MaliciousParams
from .registry import Attack, register


def z_max(n: int, m: int) -> float:
    """Baruch et al.'s z_max for n workers of which m are malicious."""
    s = min(max(math.floor(n / 2 + 1) - m, 1), max(n - 1, 1))
    return NormalDist().inv_cdf((n - s) / n) if n > 1 else 0.0


@dataclass
class AlieParams(MaliciousParams):
    z: float | None = hp(
        None,
        help="z: standard deviations subtracted from the honest mean; null = the paper's z_max for the round",
        source="Baruch et al. 2019 (z_max from n and m)",
    )


@register
class Alie(Attack):
    name = "alie"
    summary = "send mean - z std of the honest updates"
    paper = "Baruch et al. 2019, A Little Is Enough: Circumventing Defenses for Distributed Learning"
    Params = AlieParams

    def poisons_replies(self, params) -> bool:
        return True

    def poison_replies(self, params, ctx) -> None:
        d = ctx.honest_updates()
        if d.shape[1] == 0:  # the algorithm shares no parameter (local): nothing to poison
            return
        mu = d.mean(dim=0)
        sigma = d.std(dim=0, correction=1) if d.shape[0] > 1 else d.new_zeros(d.shape[1])
        z = params.z if params.z is not None else z_max(ctx.cohort, len(ctx.malicious))
        poisoned = mu - z * sigma
        for o in ctx.malicious:
            ctx.space.replace(o, poisoned)
