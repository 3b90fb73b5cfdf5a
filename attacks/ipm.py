"""Inner-product manipulation (Xie, Koyejo and Gupta 2020, "Fall of Empires: Breaking
Byzantine-tolerant SGD by Inner Product Manipulation"): every malicious party sends

    d_mal = -epsilon mean(d_honest)

so that the aggregate's inner product with the true update turns negative while the
malicious updates stay small and close to the honest ones (small epsilon passes Krum;
Xie et al. and Karimireddy et al. 2021 use epsilon = 0.1). The mean of the honest
updates is computed at the server (an omniscient attacker, registry docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

from strategies.params import hp

from .params import MaliciousParams
from .registry import Attack, register


@dataclass
class IpmParams(MaliciousParams):
    epsilon: float = hp(
        0.1,
        gt=0,
        help="epsilon: the malicious update is -epsilon times the honest mean",
        source="Xie et al. 2020; Karimireddy et al. 2021's experiments (0.1)",
    )


@register
class Ipm(Attack):
    name = "ipm"
    summary = "send -epsilon times the mean of the honest updates"
    paper = "Xie et al. 2020, Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product Manipulation"
    Params = IpmParams

    def poisons_replies(self, params) -> bool:
        return True

    def poison_replies(self, params, ctx) -> None:
        poisoned = -params.epsilon * ctx.honest_updates().mean(dim=0)
        for o in ctx.malicious:
            ctx.space.replace(o, poisoned)
