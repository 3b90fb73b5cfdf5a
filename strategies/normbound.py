"""Norm bounding (Sun et al. 2019, "Can You Really Backdoor Federated Learning?"): every
update is clipped to the norm bound M before the algorithm aggregates:

    d_k <- d_k * min(1, M / ||d_k||_2),   d_k = w_k - w over the trainable parameters

An update at or under the bound passes unchanged (bit for bit); a longer one is scaled
onto the sphere of radius M. Sun et al. fix M by hand; fedsim's default takes M as the
median of the round's update norms (FLAME's choice, Nguyen et al. 2022): a scale-free
bound that an honest majority sets, so the default works for any model and learning
rate. ``defence.norm_bound`` fixes M.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .defences import Defence, DefenceParams, register
from .params import hp
from .replies import ReplyRule, scale_update, trainable_keys, update_norms


@dataclass
class NormBoundParams(DefenceParams):
    norm_bound: float | None = hp(
        None,
        gt=0,
        help="M: updates longer than M are scaled to norm M; null = the median update norm of the round",
        source="Sun et al. 2019 set M by hand; null: FLAME's median norm (Nguyen et al. 2022)",
    )


class NormBoundRule(ReplyRule):
    def __init__(self, bound: float | None) -> None:
        self.bound = bound

    def apply(self, server_round, global_state, outcomes, setup) -> dict[str, float]:
        keys = trainable_keys(global_state, setup, outcomes)
        norms = update_norms(outcomes, global_state, keys)
        if not norms:
            return {}
        bound = self.bound if self.bound is not None else statistics.median(norms)
        clipped = 0
        for o, norm in zip(outcomes, norms):
            if norm > bound:
                scale_update(o, global_state, keys, bound / norm)
                clipped += 1
        return {"defence_norm_bound": float(bound), "defence_clipped": float(clipped)}


@register
class NormBound(Defence):
    name = "norm-bound"
    summary = "clip every update to norm M before the algorithm aggregates"
    paper = "Sun et al. 2019, Can You Really Backdoor Federated Learning?"
    Params = NormBoundParams

    def rule(self, params):
        return NormBoundRule(params.norm_bound)
