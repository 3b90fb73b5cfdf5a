"""FedNova (Wang et al. 2020, "Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization").

Client i runs tau_i local steps and reports the norm of its local update rule

    a_i = tau_i                                                   (plain SGD)
    a_i = [tau_i - rho (1 - rho^tau_i) / (1 - rho)] / (1 - rho)   (SGD, momentum rho)

with its weights w_i. Server, with p_i = n_i / n over the cohort:

    d_i = (w - w_i) / a_i,   tau_eff = sum_i p_i a_i,   w <- w - tau_eff * sum_i p_i d_i

Equal steps without momentum give FedAvg exactly. Buffers (BatchNorm statistics)
are averaged as in FedAvg. The a_i formula holds for SGD only (config check).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from .arrays import is_float
from .base import ClientOutcome, ClientRule, FedsimStrategy, RuleOutput
from .fedavg import flower_kwargs
from .registry import StrategySpec, register

A_KEY = "fednova_a"


def normalizing_factor(tau: int, rho: float) -> float:
    """a_i of FedNova for tau local SGD steps with momentum rho."""
    if tau <= 0:
        return 0.0
    if rho == 0:
        return float(tau)
    return (tau - rho * (1 - rho**tau) / (1 - rho)) / (1 - rho)


class FedNovaRule(ClientRule):
    def on_train_end(self, steps: int) -> RuleOutput:
        return RuleOutput(metrics={A_KEY: normalizing_factor(steps, self.ctx.momentum)})


class FedNova(FedsimStrategy, FlowerFedAvg):
    """Server half: normalised averaging."""

    def aggregate_outcomes(self, server_round: int, outcomes: list[ClientOutcome]):
        g = self.round_log.global_state
        avg = self.average(outcomes)
        n = float(sum(o.num_examples for o in outcomes))
        p = [o.num_examples / n for o in outcomes]
        a = [float(o.metrics.get(A_KEY, 0.0)) for o in outcomes]
        tau_eff = sum(pi * ai for pi, ai in zip(p, a))
        new: OrderedDict[str, torch.Tensor] = OrderedDict()
        for key, gv in g.items():
            # buffers (BatchNorm statistics) are averaged: a normalised step with unequal
            # a_i could push a running variance below zero
            if not is_float(gv) or not self.setup.is_param(key):
                new[key] = avg[key]
                continue
            direction = torch.zeros(gv.shape, dtype=torch.float64)
            for o, pi, ai in zip(outcomes, p, a):
                if ai > 0:
                    direction += pi * (gv.double() - o.state[key].double()) / ai
            new[key] = (gv.double() - tau_eff * direction).to(gv.dtype)
        self.round_log.server_metrics["tau_eff"] = tau_eff
        return new


register(
    StrategySpec(
        "fednova",
        lambda cfg: FedNova(**flower_kwargs(cfg)),
        FedNovaRule,
        summary="normalised averaging of updates for unequal local steps",
    )
)
