"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks").

Client: the local objective gets a proximal term,
``h_k(w) = F_k(w) + mu/2 ||w - w^t||^2`` with ``w^t`` the global weights received,
over the trainable parameters. Server: Flower's FedProx, which sends ``mu`` to the
clients as ``proximal-mu``; aggregation is FedAvg's weighted average, so ``mu = 0``
gives exactly FedAvg's weights.
"""

from __future__ import annotations

import torch
from flwr.serverapp.strategy import FedProx as FlowerFedProx


from .base import ClientOutcome, ClientRule, FedsimStrategy
from .fedavg import flower_kwargs
from .registry import StrategySpec, register


class FedProxRule(ClientRule):
    """Adds ``mu/2 ||w - w^t||^2`` to every mini-batch loss."""
    needs_global = True

    def on_train_begin(self) -> None:
        self.mu = float(self.ctx.config.get("proximal-mu", 0.0))
        g = self.ctx.global_state
        self.pairs = [(p, g[name]) for name, p in self.ctx.model.named_parameters() if p.requires_grad]

    def proximal_term(self) -> torch.Tensor:
        return sum(((p - g) ** 2).sum() for p, g in self.pairs)  # type: ignore[return-value]

    def loss(self, x, y):
        loss, logits = super().loss(x, y)
        if self.mu > 0:
            loss = loss + 0.5 * self.mu * self.proximal_term()
        return loss, logits

    @staticmethod
    def functional_penalty(config, params, global_params):
        mu = float(config.get("proximal-mu", 0.0))
        if mu <= 0:
            return None
        return 0.5 * mu * sum(((p - global_params[name]) ** 2).sum() for name, p in params.items())


class FedProx(FedsimStrategy, FlowerFedProx):
    """Flower's FedProx (sends ``proximal-mu``) with FedAvg's float64 average."""

    def aggregate_outcomes(self, server_round: int, outcomes: list[ClientOutcome]):
        return self.average(outcomes)


register(
    StrategySpec(
        "fedprox",
        lambda cfg: FedProx(proximal_mu=cfg.strategy.mu, **flower_kwargs(cfg)),
        FedProxRule,
        summary="FedAvg + proximal term mu/2 ||w - w_global||^2 (strategy.mu)",
    )
)
