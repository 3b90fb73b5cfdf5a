"""Centred clipping (Karimireddy, He and Jaggi 2021, "Learning from History for Byzantine
Robust Optimization"): each update is clipped to radius tau around a centre v that
comes from the history of the aggregate,

    v <- v + sum_k p_k (d_k - v) min(1, tau / ||d_k - v||)        (l iterations)

with v at first the previous round's aggregated update (w_t - w_{t-1}; zero in round 1).
As a rule before the algorithm: iterations 1..l-1 move the centre, then each reply is
replaced by v + (d_k - v) min(1, tau / ||d_k - v||), so the algorithm's weighted mean
(p_k = n_k / n, FedAvg's weights) performs the last iteration; with equal party sizes
that is the paper's uniform mean. Karimireddy et al.'s experiments use l = 1 and
tau = 100 on a ResNet-20's momentum; a round's model updates have another scale, so
fedsim's default tau is the round's median distance ||d_k - v|| (an honest distance
while honest parties are the majority); ``defence.radius`` fixes tau.

Refused with the robust aggregators (Krum, Multi-Krum, Bulyan, median, trimmed mean):
centred clipping is itself an aggregator built on the mean, and its last iteration is
the algorithm's average.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import registry as algorithms
from .defences import Defence, DefenceParams, register
from .params import hp
from .replies import ReplyRule, UpdateSpace


@dataclass
class CentredClipParams(DefenceParams):
    radius: float | None = hp(
        None,
        gt=0,
        help="tau: updates farther than tau from the centre are pulled onto its sphere; null = the median distance of the round",
        source="Karimireddy et al. 2021 use tau = 100 on momentum gradients; null: fedsim's scale-free choice",
    )
    iterations: int = hp(
        1,
        ge=1,
        help="l, clipping iterations (the last one is the algorithm's mean)",
        source="Karimireddy et al. 2021's experiments (l = 1)",
    )


def _clip(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Rows of ``diff`` scaled to norm at most tau."""
    norms = diff.norm(dim=1, keepdim=True)
    return diff * torch.clamp(tau / norms.clamp_min(1e-30), max=1.0)


class CentredClipRule(ReplyRule):
    state_attributes = ("centre",)

    def __init__(self, radius: float | None, iterations: int) -> None:
        self.radius = radius
        self.iterations = iterations
        #: the previous round's aggregated update over the trainable parameters the replies carry (CPU)
        self.centre: torch.Tensor | None = None
        #: those parameters (a personalised algorithm's shared layers), from the round's replies
        self.keys: list[str] | None = None

    def apply(self, server_round, global_state, outcomes, setup) -> dict[str, float]:
        if not outcomes:
            return {}
        space = UpdateSpace(global_state, setup, outcomes)
        self.keys = space.keys
        d = space.matrix(outcomes)
        v = torch.zeros(space.dim, device=d.device) if self.centre is None else self.centre.to(d.device)
        w = torch.tensor([float(o.num_examples) for o in outcomes], device=d.device)
        w = w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1.0 / len(outcomes))
        tau = self.radius
        for it in range(self.iterations):
            diff = d - v
            if self.radius is None:
                tau = float(diff.norm(dim=1).median())
            clipped = _clip(diff, tau)
            if it < self.iterations - 1:
                v = v + (w[:, None] * clipped).sum(dim=0)
        far = (diff.norm(dim=1) > tau).tolist()
        for o, row, is_far in zip(outcomes, clipped, far):
            if is_far:  # a reply within tau of the centre stays as sent, bit for bit
                space.replace(o, v + row)
        return {"defence_radius": float(tau), "defence_clipped": float(sum(far))}

    def after_aggregate(self, server_round, global_state, agg_state, setup) -> None:
        space = UpdateSpace(global_state, setup, keys=self.keys)
        self.centre = space.vector(agg_state).cpu()


@register
class CentredClip(Defence):
    name = "centred-clip"
    summary = "clip every update around the previous aggregate update (learning from history)"
    paper = "Karimireddy, He and Jaggi 2021, Learning from History for Byzantine Robust Optimization"
    Params = CentredClipParams

    def rule(self, params):
        return CentredClipRule(params.radius, params.iterations)

    def check(self, cfg) -> str | None:
        if algorithms.get(cfg.strategy.name).robust:
            return (
                f"defence 'centred-clip' is an aggregator built on the mean; strategy '{cfg.strategy.name}' "
                "aggregates by a robust statistic instead: use an averaging strategy (fedavg, fedprox, ...)"
            )
        return None
