"""Sign flipping: each malicious party sends -s times its own honest update,

    d_mal = -s d_own

the reversed-gradient attack of Blades' and Karimireddy et al.'s benchmarks (s = 1);
Li et al. 2019 (RSA) study it with larger s. It drives FedAvg backwards with the
malicious parties' weight, and it is far from the honest updates, so distance- and
rank-based rules (Krum, the median) discard it.
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies.params import hp

from .params import MaliciousParams
from .registry import Attack, register


@dataclass
class SignFlipParams(MaliciousParams):
    scale: float = hp(
        1.0, gt=0, help="s: the malicious update is -s times the party's own", source="Blades' SignFlipping (s = 1)"
    )


@register
class SignFlip(Attack):
    name = "sign-flip"
    summary = "send -s times the own update"
    paper = "Li et al. 2019, RSA: Byzantine-Robust Stochastic Aggregation Methods for Distributed Learning"
    Params = SignFlipParams

    def poisons_replies(self, params) -> bool:
        return True

    def poison_replies(self, params, ctx) -> None:
        for o in ctx.malicious:
            ctx.space.replace(o, -params.scale * ctx.space.vector(o.state))
