"""Bulyan (El Mhamdi, Guerraoui and Rouhault 2018, "The Hidden Vulnerability of
Distributed Learning in Byzantium"), Flower's ``Bulyan``.

Of the n replies, Multi-Krum selects theta = n - 2f; then, per coordinate, the beta =
theta - 2f values closest to the coordinate-wise median of the selected are averaged.
It needs n >= 4f + 3 replies: a config whose cohort is smaller is refused, and a round
whose failures leave fewer replies keeps the global model (as Flower does), recorded
as ``bulyan_skipped`` in ``metrics.jsonl`` with a warning.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from flwr.serverapp import strategy as fs

from .builtins import FlowerAggregation
from .cohort import cohort_size
from .params import StrategyParams, hp
from .registry import Algorithm, register
from .strategy import Aggregate

log = logging.getLogger(__name__)


@dataclass
class BulyanParams(StrategyParams):
    num_malicious: int = hp(
        0,
        ge=0,
        help="f, the number of Byzantine clients tolerated (needs n >= 4f + 3 replies)",
        source="Flower's Bulyan",
    )


class BulyanServer(FlowerAggregation, fs.Bulyan):
    __doc__ = fs.Bulyan.__doc__

    def aggregate(self, server_round: int, global_state, outcomes) -> Aggregate:
        f = self.params.num_malicious
        if len(outcomes) < 4 * f + 3:
            log.warning(
                "round %d: Bulyan with f=%d needs %d replies, got %d: the global model is kept",
                server_round,
                f,
                4 * f + 3,
                len(outcomes),
            )
            return Aggregate(OrderedDict(global_state), {"bulyan_skipped": 1.0})
        self.num_malicious_nodes = f
        return Aggregate(self.flower_aggregate(server_round, [o.message for o in outcomes]))


@register
class Bulyan(Algorithm):
    name = "bulyan"
    summary = "Multi-Krum selection, then a coordinate-wise trimmed mean around the median"
    paper = "El Mhamdi et al. 2018, The Hidden Vulnerability of Distributed Learning in Byzantium"
    Params = BulyanParams
    Server = BulyanServer
    client_dp_refusal = (
        "a robust aggregator picks among the individual client updates; the Gaussian mechanism's sensitivity "
        "C / (qN) bounds the mean only"
    )

    def check(self, cfg) -> str | None:
        f = cfg.strategy.num_malicious
        fed = cfg.federation
        n = cohort_size(cfg.partition.n_parties, fed.fraction_fit, fed.min_fit_clients)
        if n < 4 * f + 3:
            return (
                f"strategy 'bulyan' with strategy.num_malicious={f} needs a cohort of at least 4f + 3 = {4 * f + 3} "
                f"clients; the config samples {n} (partition.n_parties x federation.fraction_fit): "
                f"lower num_malicious to {max(0, (n - 3) // 4)} or sample more clients"
            )
        return None
