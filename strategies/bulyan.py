"""Bulyan (El Mhamdi, Guerraoui and Rouault 2018, "The Hidden Vulnerability of
Distributed Learning in Byzantium").

Of the n replies, theta = n - 2f are chosen by Krum applied again and again, each time
to the replies not chosen yet (the paper's recursion; Flower's ``Bulyan`` takes the
theta best scores of one pass instead); then, per coordinate, the beta = theta - 2f
values closest to the coordinate-wise median of the chosen are averaged:

    S = {}; while |S| < theta: S += Krum(R \\ S);   w[c] = mean of the beta w_k[c], k in S, nearest median_S[c]

It needs n >= 4f + 3 replies: a config whose cohort is smaller is refused, and a round
whose failures leave fewer replies keeps the global model (as Flower does), recorded
as ``bulyan_skipped`` in ``metrics.jsonl`` with a warning. Distances and f as in
``krum.py`` (f from the attack, or (n - 3) // 4 without one).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch

from .arrays import is_float
from .params import StrategyParams, hp
from .registry import register
from .robust import (
    AUTO_F,
    ByzantineRobust,
    bulyan_select,
    bulyan_tolerates,
    distance_keys,
    median_closest_mean,
    round_f,
    squared_distances,
)
from .strategy import Aggregate, FedAvgServer

log = logging.getLogger(__name__)


@dataclass
class BulyanParams(StrategyParams):
    num_malicious: int = hp(
        AUTO_F,
        ge=AUTO_F,
        help="f, the Byzantine clients tolerated (needs n >= 4f + 3 replies); -1 = the attack's expected "
        "malicious parties per cohort, or without an attack the most the cohort tolerates ((n - 3) // 4)",
        source="El Mhamdi et al. 2018 (n >= 4f + 3); Flower's default 0 is an untrimmed mean",
    )


class BulyanServer(FedAvgServer):
    """Iterated Krum selection, then the mean around the coordinate-wise median."""

    def aggregate(self, server_round: int, global_state, outcomes) -> Aggregate:
        n = len(outcomes)
        f = round_f(self.params.num_malicious, n, bulyan_tolerates)
        if n < 4 * f + 3:
            log.warning(
                "round %d: Bulyan with f=%d needs %d replies, got %d: the global model is kept",
                server_round,
                f,
                4 * f + 3,
                n,
            )
            return Aggregate(OrderedDict(global_state), {"bulyan_skipped": 1.0, "robust_f": float(f)})
        theta, beta = n - 2 * f, n - 4 * f
        states = [o.state for o in outcomes]
        dist = squared_distances(states, distance_keys(states, self.setup.is_param), self.setup.device)
        chosen = [outcomes[i] for i in bulyan_select(dist, f, theta)]
        out = self.average(chosen)  # integer buffers (step counters): the maximum
        for key, value in out.items():
            if is_float(value):
                stack = torch.stack([o.state[key] for o in chosen]).to(self.setup.device, torch.float64)
                out[key] = median_closest_mean(stack, beta).to(value.dtype).cpu()
        return Aggregate(out, {"robust_f": float(f)})


@register
class Bulyan(ByzantineRobust):
    name = "bulyan"
    summary = "iterated Krum selection, then a coordinate-wise trimmed mean around the median"
    paper = "El Mhamdi et al. 2018, The Hidden Vulnerability of Distributed Learning in Byzantium"
    Params = BulyanParams
    Server = BulyanServer
    tolerates = staticmethod(bulyan_tolerates)

    @staticmethod
    def min_cohort(f: int) -> str:
        return f"4f + 3 = {4 * f + 3}"
