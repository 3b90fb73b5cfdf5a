"""Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent").

Each reply's score is the sum of its squared distances to its n - f - 2 nearest other
replies, s(i) = sum_{i -> j} ||w_i - w_j||^2; the reply with the lowest score becomes
the global model. Distances are summed directly in float64 (``strategies/robust.py``:
Flower's ``compute_distances`` cancels when updates are small next to the weights), and
f follows the attack when ``num_malicious`` is -1 (the default).
"""

from __future__ import annotations

from dataclasses import dataclass

from .params import StrategyParams, hp
from .registry import register
from .robust import AUTO_F, ByzantineRobust, distance_keys, krum_tolerates, multikrum_select, round_f, squared_distances
from .strategy import Aggregate, FedAvgServer


@dataclass
class KrumParams(StrategyParams):
    num_malicious: int = hp(
        AUTO_F,
        ge=AUTO_F,
        help="f, the Byzantine clients tolerated (score over n - f - 2 neighbours); -1 = the attack's expected "
        "malicious parties per cohort, or without an attack the most the cohort tolerates ((n - 3) // 2)",
        source="Blanchard et al. 2017 (n > 2f + 2); Flower's default 0 defends nothing",
    )


class KrumServer(FedAvgServer):
    """Krum's selection over the round's replies (the chosen reply's whole model)."""

    def aggregate(self, server_round, global_state, outcomes) -> Aggregate:
        f = round_f(self.params.num_malicious, len(outcomes), krum_tolerates)
        states = [o.state for o in outcomes]
        dist = squared_distances(states, distance_keys(states, self.setup.is_param), self.setup.device)
        chosen = multikrum_select(dist, f, 1)
        return Aggregate(self.average([outcomes[i] for i in chosen]), {"robust_f": float(f)})


@register
class Krum(ByzantineRobust):
    name = "krum"
    summary = "the client model with the smallest distance to its neighbours"
    paper = "Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent"
    Params = KrumParams
    Server = KrumServer
