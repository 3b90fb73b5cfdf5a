"""A linear model y = x . w + b on 4 fixed points with loss 0.5 * mean((x.w + b - t)^2),
trained full-batch by a client rule: exact gradients for hand-simulated local steps.

grad_w = X^T r / n, grad_b = mean(r), r = X w + b - t.
"""

from __future__ import annotations

import torch
from rule_context import rule_context
from torch import nn

from fedsim.client.training import PartyData, train_local
from fedsim.schema.sections import TrainConfig

X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, 0.5]])
T = torch.tensor([1.0, -1.0, 0.5, 2.0])
LR = 0.1


def quadratic(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out.squeeze(1) - t) ** 2).mean()


def grad(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact gradient at (w, b), float64."""
    r = X.double() @ w + b - T.double()
    return X.double().T @ r / len(T), r.mean().reshape(1)


def toy_model() -> nn.Linear:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, -0.2]]))
        model.bias.copy_(torch.tensor([0.1]))
    return model


def train_toy(rule_cls, steps: int, **ctx_fields):
    """(model, global_state, rule, stats) after ``steps`` full-batch plain-SGD steps."""
    model = toy_model()
    fields = {"server_round": 2, "criterion": quadratic, "lr": LR, **ctx_fields}
    ctx = rule_context(model, toy_model, **fields)
    rule = rule_cls(ctx)
    data = PartyData(x=X, y=T, indices=torch.arange(len(T)), mean=None, std=None)
    cfg = TrainConfig(epochs=steps, batch_size=len(T), lr=LR, momentum=0.0)
    stats = train_local(model, rule, data, cfg, steps, torch.Generator().manual_seed(0), torch.device("cpu"))
    return model, ctx.global_state, rule, stats


def flat(state) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, b) of a toy state, float64."""
    return state["weight"].double().reshape(-1), state["bias"].double().reshape(-1)
