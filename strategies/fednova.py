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

from .arrays import is_float
from .registry import Algorithm, register
from .rule import ClientRule, RuleOutput
from .strategy import Aggregate, ClientOutcome, FedAvgServer

A_KEY = "fednova_a"


def normalizing_factor(tau: int, rho: float) -> float:
    """a_i of FedNova for tau local SGD steps with momentum rho."""
    if tau <= 0:
        return 0.0
    if rho == 0:
        return float(tau)
    return (tau - rho * (1 - rho**tau) / (1 - rho)) / (1 - rho)


class FedNovaRule(ClientRule):
    # plain training; on_train_end reads only the step count
    batchable = True

    def on_train_end(self, steps: int) -> RuleOutput:
        return RuleOutput(metrics={A_KEY: normalizing_factor(steps, self.ctx.momentum)})


class FedNovaServer(FedAvgServer):
    """Server half: normalised averaging."""

    def aggregate(self, server_round: int, global_state, outcomes: list[ClientOutcome]) -> Aggregate:
        avg = self.average(outcomes)
        n = float(sum(o.num_examples for o in outcomes))
        p = [o.num_examples / n for o in outcomes]
        a = [float(o.metrics.get(A_KEY, 0.0)) for o in outcomes]
        tau_eff = sum(pi * ai for pi, ai in zip(p, a))
        new: OrderedDict[str, torch.Tensor] = OrderedDict()
        for key, gv in global_state.items():
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
        return Aggregate(new, {"tau_eff": tau_eff})


@register
class FedNova(Algorithm):
    name = "fednova"
    summary = "normalised averaging of updates for unequal local steps"
    paper = "Wang et al. 2020, Tackling the Objective Inconsistency Problem in Heterogeneous Federated Optimization"
    Rule = FedNovaRule
    Server = FedNovaServer
    client_dp_refusal = (
        "its server weighs each update by the local steps the client reports (a_i), not by the cohort's mean"
    )

    def check(self, cfg) -> str | None:
        if cfg.train.optimizer != "sgd":
            return f"strategy 'fednova' needs train.optimizer: sgd (its a_i formula is for SGD with momentum); got '{cfg.train.optimizer}'"
        return None
