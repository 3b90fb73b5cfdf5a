"""pFedMe (Dinh, Tran and Nguyen 2020, "Personalized Federated Learning with Moreau
Envelopes").

Each party's personal model is the minimiser of its loss regularised towards its
local copy of the global model ``w``:

    theta_k(w) = argmin_theta f_k(theta) + lamda/2 ||theta - w||^2    (the Moreau envelope)

Client, for every mini-batch (the paper's Algorithm 1, its code's solver):

    repeat inner_steps times:  theta <- theta - personal_lr (grad f_k(theta) + lamda (theta - w))
    w <- w - eta lamda (w - theta)

with ``eta = train.lr`` and ``theta``, ``w`` starting from the global model each
round. The reply carries ``w``; the last ``theta`` is the party's personal model
(``personal_*``, kept in the client-state store). Server:

    w^{t+1} = (1 - beta) w^t + beta sum_k (n_k / n) w_k

(``beta = 1`` is FedAvg's average). The inner solver is plain gradient descent, as in
the paper; ``train.optimizer`` does not apply to it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from .arrays import is_float
from .params import StrategyParams, hp
from .registry import Algorithm, register
from .rule import ClientRule, RuleOutput, trainable
from .strategy import Aggregate, FedAvgServer


@dataclass
class PFedMeParams(StrategyParams):
    lamda: float = hp(
        15.0, gt=0, help="weight lamda of the Moreau envelope's ||theta - w||^2", source="FL-bench's pFedMe"
    )
    personal_lr: float = hp(0.01, gt=0, help="step size of the inner solver for theta", source="FL-bench's pFedMe")
    inner_steps: int = hp(
        5, ge=1, help="gradient steps K of the inner solver per mini-batch", source="FL-bench's pFedMe"
    )
    beta: float = hp(
        1.0, gt=0, le=2, help="server step beta of w <- (1 - beta) w + beta avg", source="FL-bench's pFedMe"
    )


class PFedMeRule(ClientRule):
    uses_state = True
    batchable = False

    def fit(self, epochs: int, max_steps: int | None = None):
        ctx = self.ctx
        hp_ = ctx.params
        lamda, plr, inner, eta = float(hp_.lamda), float(hp_.personal_lr), int(hp_.inner_steps), float(ctx.lr)
        theta = [p for _, p in trainable(ctx.model)]
        self.w = w = [p.detach().clone() for p in theta]
        ctx.model.train()

        def step(x, y):
            for _ in range(inner):
                logits = ctx.model(x)
                loss = ctx.criterion(logits, y)
                grads = torch.autograd.grad(loss, theta)
                with torch.no_grad():
                    for p, g, wk in zip(theta, grads, w):
                        p.sub_(plr * (g + lamda * (p - wk)))
            with torch.no_grad():
                gap = sum(((p - wk) ** 2).sum() for p, wk in zip(theta, w))
                for p, wk in zip(theta, w):
                    wk.sub_(eta * lamda * (wk - p))
            return loss.detach() + 0.5 * lamda * gap, logits.detach()

        return ctx.trainer.loop(step, epochs, max_steps)

    def on_train_end(self, steps: int) -> RuleOutput:
        model = self.ctx.model
        personal = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        # the reply carries w: put it into the model that the client sends
        with torch.no_grad():
            for (_, p), wk in zip(trainable(model), self.w):
                p.copy_(wk)
        return RuleOutput(state=personal)


class PFedMeServer(FedAvgServer):
    """``w <- (1 - beta) w + beta avg(w_k)`` on float entries (integer buffers: the average's)."""

    def aggregate(self, server_round, global_state, outcomes) -> Aggregate:
        avg = self.average(outcomes)
        beta = float(self.params.beta)
        if beta == 1.0:
            return Aggregate(avg)
        return Aggregate(
            OrderedDict(
                (k, ((1 - beta) * global_state[k].double() + beta * v.double()).to(v.dtype) if is_float(v) else v)
                for k, v in avg.items()
            )
        )


@register
class PFedMe(Algorithm):
    name = "pfedme"
    summary = "Moreau-envelope personal models (inner solver), server step beta"
    paper = "Dinh, Tran and Nguyen 2020, Personalized Federated Learning with Moreau Envelopes"
    Params = PFedMeParams
    Rule = PFedMeRule
    Server = PFedMeServer
    personal = True
