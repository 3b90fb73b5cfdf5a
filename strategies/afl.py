"""AFL, agnostic federated learning (Mohri, Sivek, Suresh 2019, "Agnostic Federated
Learning", ICML): the model that minimises the worst mixture of the parties' losses,

    min_w max_{lambda in simplex} L(w, lambda) = sum_k lambda_k F_k(w),

by alternating a descent step on w with a projected gradient ascent step on lambda.
The gradient of L in lambda is the vector of the parties' losses, so each round

    lambda <- Proj_simplex(lambda + gamma_lambda F(w^t))

with F_k(w^t) the loss of the global model on party k's training data before it
trains (the ``global_loss`` each training party reports when asked; a party outside
the cohort keeps its lambda_k before the projection), and the model is the cohort's
local models averaged with weights lambda_k (renormalised over the cohort):

    w^{t+1} = sum_{k in S} lambda_k w_k / sum_{k in S} lambda_k.

This is the reference implementation's (Li et al.'s ``fair_flearn``, ``afl.py``:
lambda starts uniform, lambda += gamma_lambda x loss, then projected; gamma_lambda 0.01
in its run scripts) with local epochs instead of one SGD step, and the last iterate as
the global model (the reference also reports the running average of iterates). With
gamma_lambda = 0 lambda never moves: initialised uniform it is FedAvg with equal
weights, which is fedsim's FedAvg on equally sized parties; initialised by size
(``init: size``, lambda_k = n_k / n) it is fedsim's FedAvg exactly, for any sizes. Lambda is
server state (checkpointed) and each round's largest lambda_k is recorded
(``afl_lambda_max``). The projection is Duchi et al. 2008's sort-based one.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from .arrays import weighted_average
from .params import StrategyParams, hp
from .registry import Algorithm, register
from .strategy import Aggregate, ClientOutcome, FedAvgServer, FederationSetup


@dataclass
class AFLParams(StrategyParams):
    lr_lambda: float = hp(
        0.01,
        ge=0,
        help="gamma_lambda: step of the projected gradient ascent on the mixture weights; 0 keeps them",
        source="Mohri et al. 2019; 0.01 in the reference runs (Li et al. 2020, fair_flearn)",
    )
    init: str = hp(
        "uniform",
        choices=("uniform", "size"),
        help="lambda's start: 1/N each, or each party's share of the samples n_k/n",
        source="uniform: the reference (fair_flearn afl.py)",
    )


def project_simplex(v: np.ndarray) -> np.ndarray:
    """The Euclidean projection of ``v`` onto {x >= 0, sum x = 1} (Duchi et al. 2008)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    ind = np.arange(1, v.size + 1)
    rho = ind[u - css / ind > 0][-1]
    theta = css[rho - 1] / rho
    return np.maximum(v - theta, 0.0)


class AFLServer(FedAvgServer):
    """Server half: lambda-weighted averaging and the ascent step on lambda."""

    state_attributes = ("lambdas",)
    asks_global_loss = True

    def bind(self, setup: FederationSetup) -> None:
        super().bind(setup)
        n = len(setup.node_of_party)
        sizes = np.asarray(setup.party_sizes, dtype=np.float64)
        if self.params.init == "size" and sizes.size == n and sizes.sum() > 0:
            self.lambdas = sizes / sizes.sum()
        else:
            self.lambdas = np.full(n, 1.0 / n)

    def aggregate(
        self, server_round: int, global_state: Mapping[str, torch.Tensor], outcomes: list[ClientOutcome]
    ) -> Aggregate:
        weights = [float(self.lambdas[o.party]) for o in outcomes]
        if sum(weights) <= 0:  # the cohort's lambdas all projected to 0: their plain mean
            weights = [1.0] * len(outcomes)
        new: OrderedDict[str, torch.Tensor] = weighted_average([o.state for o in outcomes], weights, self.setup.device)
        step = np.array(self.lambdas, dtype=np.float64)
        for o in outcomes:
            loss = o.metrics.get("global_loss", math.nan)
            if isinstance(loss, (int, float)) and math.isfinite(loss):
                step[o.party] += self.params.lr_lambda * float(loss)
        # gamma 0: lambda is left as it was (no projection rounding either)
        self.lambdas = project_simplex(step) if self.params.lr_lambda > 0 else self.lambdas
        return Aggregate(new, {"afl_lambda_max": float(np.max(self.lambdas))})


@register
class AFL(Algorithm):
    name = "afl"
    summary = "agnostic FL: the model for the worst mixture of the parties (lambda by projected ascent)"
    paper = "Mohri, Sivek, Suresh 2019, Agnostic Federated Learning (ICML)"
    Params = AFLParams
    Server = AFLServer
    client_dp_refusal = "its server weighs each party by a mixture weight lambda_k, not by the cohort's plain mean"
