"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks").

Client: the local objective gets a proximal term,
``h_k(w) = F_k(w) + mu/2 ||w - w^t||^2`` with ``w^t`` the global weights received,
over the trainable parameters. Server: FedAvg's weighted average, so ``mu = 0``
gives exactly FedAvg's weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .params import StrategyParams, hp
from .registry import Algorithm, register
from .rule import ClientRule, trainable


@dataclass
class FedProxParams(StrategyParams):
    mu: float = hp(
        0.01,
        ge=0,
        help="proximal weight mu of mu/2 ||w - w_global||^2",
        source="NIID-Bench's default (Li et al. 2022); the FedProx paper tunes it in {0.001, 0.01, 0.1, 1}",
    )


class FedProxRule(ClientRule):
    """Adds ``mu/2 ||w - w^t||^2`` to every mini-batch loss."""

    # the proximal term is functional_penalty: the batched path adds it in the vmapped loss
    batchable = True
    needs_global = True

    def on_train_begin(self) -> None:
        self.mu = float(self.ctx.params.mu)
        g = self.ctx.global_state
        self.pairs = [(p, g[name]) for name, p in trainable(self.ctx.model)]

    def proximal_term(self) -> torch.Tensor:
        return sum(((p - g) ** 2).sum() for p, g in self.pairs)  # type: ignore[return-value]

    def loss(self, x, y):
        loss, logits = super().loss(x, y)
        if self.mu > 0:
            loss = loss + 0.5 * self.mu * self.proximal_term()
        return loss, logits

    @staticmethod
    def functional_penalty(hparams, weights, global_weights):
        if hparams.mu <= 0:
            return None
        return 0.5 * hparams.mu * sum(((p - global_weights[name]) ** 2).sum() for name, p in weights.items())


@register
class FedProx(Algorithm):
    name = "fedprox"
    summary = "FedAvg + proximal term mu/2 ||w - w_global||^2"
    paper = "Li et al. 2020, Federated Optimization in Heterogeneous Networks"
    Params = FedProxParams
    Rule = FedProxRule
