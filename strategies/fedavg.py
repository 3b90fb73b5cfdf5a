"""FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data").

Server: ``w+ = sum_k (n_k / n) w_k`` over the cohort's replies, n_k the party's
number of training examples and n their sum. Integer buffers are not averaged as
floats (see :mod:`strategies.arrays`). Client: plain local SGD.
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import FedAvg as FlowerFedAvg


from .base import ClientOutcome, ClientRule, FedsimStrategy
from .registry import StrategySpec, register


class FedAvg(FedsimStrategy, FlowerFedAvg):
    """Flower's FedAvg with fedsim's sampling and a key-by-key float64 average."""

    def aggregate_outcomes(self, server_round: int, outcomes: list[ClientOutcome]):
        return self.average(outcomes)


def flower_kwargs(cfg: Any) -> dict[str, Any]:
    """Arguments every Flower strategy takes; sampling itself is fedsim's (bind())."""
    return {"fraction_train": 1.0, "fraction_evaluate": 1.0,
            "min_train_nodes": 0, "min_evaluate_nodes": 0, "min_available_nodes": 0}


register(StrategySpec("fedavg", lambda cfg: FedAvg(**flower_kwargs(cfg)), ClientRule, summary="weighted average of the client models"))
