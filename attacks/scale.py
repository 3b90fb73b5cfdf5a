"""Scaling (explicit boosting, Bhagoji et al. 2019, "Analyzing Federated Learning through
an Adversarial Lens"): each malicious party sends its own update boosted,

    d_mal = lambda d_own

with lambda = K, the number of replies of the round, by default (Bhagoji et al.'s
lambda = K: one agent's update then weighs as much as the whole average of K). A
norm-bounding defence undoes it; FedAvg follows it.
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies.params import hp

from .params import MaliciousParams
from .registry import Attack, register


@dataclass
class ScaleParams(MaliciousParams):
    factor: float | None = hp(
        None,
        gt=0,
        help="lambda: the malicious update is lambda times the party's own; null = the round's number of replies K",
        source="Bhagoji et al. 2019 (lambda = K)",
    )


@register
class Scale(Attack):
    name = "scale"
    summary = "send the own update boosted by lambda"
    paper = "Bhagoji et al. 2019, Analyzing Federated Learning through an Adversarial Lens"
    Params = ScaleParams

    def poisons_replies(self, params) -> bool:
        return True

    def poison_replies(self, params, ctx) -> None:
        factor = params.factor if params.factor is not None else float(ctx.cohort)
        for o in ctx.malicious:
            ctx.space.replace(o, factor * ctx.space.vector(o.state))
