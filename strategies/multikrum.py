"""Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent"), Flower's ``MultiKrum``.

Each reply's score is the sum of its squared distances to its n - f - 2 nearest
replies; the m replies with the lowest scores are averaged (weighted by examples).
m = 1 is Krum (``strategy.name: krum``); fedsim's default m = n - f (``num_selected: 0``)
is Blanchard et al.'s Multi-Krum, which keeps the averaging's variance reduction while
dropping the f replies farthest from the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.serverapp import strategy as fs

from .builtins import FlowerAggregation
from .params import StrategyParams, hp
from .registry import Algorithm, register
from .strategy import Aggregate


@dataclass
class MultiKrumParams(StrategyParams):
    num_malicious: int = hp(
        0,
        ge=0,
        help="f, the number of Byzantine clients tolerated (scores over n - f - 2 neighbours)",
        source="Flower's MultiKrum",
    )
    num_selected: int = hp(
        0,
        ge=0,
        help="m, the replies averaged (the m best scores); 0 = n - f of the round's n replies",
        source="Blanchard et al. 2017 (m = n - f); Flower's default 1 is Krum",
    )


class MultiKrumServer(FlowerAggregation, fs.MultiKrum):
    __doc__ = fs.MultiKrum.__doc__

    def aggregate(self, server_round: int, global_state, outcomes) -> Aggregate:
        p = self.params
        # Flower fixes m at construction; here it follows the round's number of replies
        self.num_malicious_nodes = p.num_malicious
        self.num_nodes_to_select = min(len(outcomes), p.num_selected or max(1, len(outcomes) - p.num_malicious))
        return Aggregate(
            self.flower_aggregate(server_round, [o.message for o in outcomes]),
            {"multikrum_selected": float(self.num_nodes_to_select)},
        )


@register
class MultiKrum(Algorithm):
    name = "multi-krum"
    summary = "average of the m client models with the smallest distances to their neighbours"
    paper = "Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent"
    Params = MultiKrumParams
    Server = MultiKrumServer
    client_dp_refusal = (
        "a robust aggregator picks among the individual client updates; the Gaussian mechanism's sensitivity "
        "C / (qN) bounds the mean only"
    )
