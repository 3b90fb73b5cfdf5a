"""Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent").

Each reply's score is the sum of its squared distances to its n - f - 2 nearest other
replies; the m replies with the lowest scores are averaged (weighted by examples).
m = 1 is Krum (``strategy.name: krum``); fedsim's default m = n - f (``num_selected: 0``)
is Blanchard et al.'s Multi-Krum, which keeps the averaging's variance reduction while
dropping the f replies farthest from the rest. Distances and f as in ``krum.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .params import StrategyParams, hp
from .registry import register
from .robust import AUTO_F, ByzantineRobust, distance_keys, krum_tolerates, multikrum_select, round_f, squared_distances
from .strategy import Aggregate, FedAvgServer


@dataclass
class MultiKrumParams(StrategyParams):
    num_malicious: int = hp(
        AUTO_F,
        ge=AUTO_F,
        help="f, the Byzantine clients tolerated (scores over n - f - 2 neighbours); -1 = the attack's expected "
        "malicious parties per cohort, or without an attack the most the cohort tolerates ((n - 3) // 2)",
        source="Blanchard et al. 2017 (n > 2f + 2); Flower's default 0 averages every reply",
    )
    num_selected: int = hp(
        0,
        ge=0,
        help="m, the replies averaged (the m best scores); 0 = n - f of the round's n replies",
        source="Blanchard et al. 2017 (m = n - f); Flower's default 1 is Krum",
    )


class MultiKrumServer(FedAvgServer):
    """The example-weighted average of the m replies with the best Krum scores."""

    def aggregate(self, server_round, global_state, outcomes) -> Aggregate:
        p = self.params
        n = len(outcomes)
        f = round_f(p.num_malicious, n, krum_tolerates)
        m = min(n, p.num_selected or max(1, n - f))
        states = [o.state for o in outcomes]
        dist = squared_distances(states, distance_keys(states, self.setup.is_param), self.setup.device)
        chosen = multikrum_select(dist, f, m)
        return Aggregate(
            self.average([outcomes[i] for i in chosen]), {"multikrum_selected": float(m), "robust_f": float(f)}
        )


@register
class MultiKrum(ByzantineRobust):
    name = "multi-krum"
    summary = "average of the m client models with the smallest distances to their neighbours"
    paper = "Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent"
    Params = MultiKrumParams
    Server = MultiKrumServer
