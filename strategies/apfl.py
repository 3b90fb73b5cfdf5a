"""APFL (Deng, Kamani and Mahdavi 2020, "Adaptive Personalized Federated Learning").

Each party keeps a personal model ``v_k`` and a mixing weight ``alpha_k``; its
personalised model is the mixture ``vbar_k = alpha_k v_k + (1 - alpha_k) w``. Client,
for every mini-batch (the paper's Algorithm 1):

    w       <- w - eta grad f_k(w)                                  (FedAvg's local step)
    v_k     <- v_k - eta grad_v f_k(vbar_k) = v_k - eta alpha_k grad f_k(vbar_k)
    alpha_k <- clip(alpha_k - eta <v_k - w, grad f_k(vbar_k)>, 0, 1)   (adaptive_alpha)

with ``vbar_k`` built from the current ``w`` taken as a constant; ``eta`` is
``train.lr`` (``w`` and ``v_k`` are stepped by ``train.optimizer``). The reply carries
``w``; the server is FedAvg. ``v_k`` and ``alpha_k`` live in the client-state store
(``v_k`` starts from the global model, ``alpha_k`` from ``alpha``). The party's
``personal_*`` model is ``alpha_k v_k + (1 - alpha_k) w_global`` (float entries; the
integer buffers are ``v_k``'s). With ``alpha = 0`` and ``adaptive_alpha: false`` the
updates of ``w`` are exactly FedAvg's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call

from .arrays import is_float
from .params import StrategyParams, hp
from .registry import Algorithm, register
from .rule import ClientRule, RuleOutput

ALPHA_KEY = "alpha"
V_PREFIX = "v."


@dataclass
class APFLParams(StrategyParams):
    alpha: float = hp(
        0.5, ge=0, le=1, help="initial mixing weight alpha of the personal model", source="FL-bench's APFL"
    )
    adaptive_alpha: bool = hp(
        True,
        choices=(True, False),
        help="learn alpha by gradient descent (the paper's adaptive APFL)",
        source="APFL (Deng et al. 2020), FL-bench",
    )


def mix(alpha: float, v: dict, w: dict) -> dict:
    """``alpha v + (1 - alpha) w`` on float entries; other entries from ``v``."""
    return {k: alpha * v[k] + (1 - alpha) * w[k] if is_float(v[k]) else v[k] for k in v}


class APFLRule(ClientRule):
    uses_state = True
    batchable = False

    def fit(self, epochs: int, max_steps: int | None = None):
        ctx = self.ctx
        w_model = ctx.model
        own = ctx.state or {}
        v_model = self.v_model = ctx.build_model()
        v_state = {k[len(V_PREFIX) :]: t for k, t in own.items() if k.startswith(V_PREFIX)}
        v_model.load_state_dict(v_state if v_state else w_model.state_dict())
        start = float(own[ALPHA_KEY]) if ALPHA_KEY in own else float(ctx.params.alpha)
        adaptive = bool(ctx.params.adaptive_alpha)
        alpha = self.alpha = torch.tensor(start, device=ctx.device, requires_grad=adaptive)
        w_params = dict(w_model.named_parameters())
        v_params = dict(v_model.named_parameters())
        v_model.train()
        lr = float(ctx.lr)

        def loss(x, y):
            logits = w_model(x)
            mixed = {n: alpha * p + (1 - alpha) * w_params[n].detach() for n, p in v_params.items()}
            mixed_logits = functional_call(v_model, mixed, (x,))
            return ctx.criterion(logits, y) + ctx.criterion(mixed_logits, y), logits

        def step_alpha() -> None:
            if adaptive and alpha.grad is not None:
                with torch.no_grad():
                    alpha.sub_(lr * alpha.grad).clamp_(0.0, 1.0)
                alpha.grad = None

        params = [*w_model.parameters(), *v_model.parameters()]
        return ctx.trainer.run(w_model, loss, epochs, params=params, after_backward=step_alpha, max_steps=max_steps)

    def on_train_end(self, steps: int) -> RuleOutput:
        state = {V_PREFIX + k: v.detach().cpu().clone() for k, v in self.v_model.state_dict().items()}
        state[ALPHA_KEY] = self.alpha.detach().cpu().clone()
        return RuleOutput(state=state, metrics={"apfl_alpha": float(self.alpha.detach())})


@register
class APFL(Algorithm):
    name = "apfl"
    summary = "personal model mixed with the global one by a learned alpha"
    paper = "Deng, Kamani and Mahdavi 2020, Adaptive Personalized Federated Learning"
    Params = APFLParams
    Rule = APFLRule
    personal = True

    def personalize(self, params, global_state, client_state, finetune):
        if not client_state:
            return dict(global_state)
        v = {k[len(V_PREFIX) :]: t for k, t in client_state.items() if k.startswith(V_PREFIX)}
        return mix(float(client_state[ALPHA_KEY]), v, dict(global_state))
