"""Ditto (Li et al. 2021, "Ditto: Fair and Robust Federated Learning Through
Personalization").

Each party has two models: its share of the global model ``w`` and a personal model
``v_k``. Client, each round (the paper's Algorithm 1):

    w_k <- w^t - eta grad f_k(w)                        (train.epochs epochs: FedAvg's update)
    v_k <- v_k - eta (grad f_k(v_k) + lamda (v_k - w^t))  (personal_epochs epochs)

``w^t`` is the global model received this round; ``v_k`` starts from the global
model in the party's first round and lives in the client-state store after that.
The reply carries ``w_k``; the server is FedAvg. The personalised model is ``v_k``
(``personal_*``). As lamda grows, ``v_k`` is pulled onto ``w^t``; at ``lamda = 0``
it is plain local training. Both updates use ``train.*`` (optimizer, lr, batch size).
"""

from __future__ import annotations

from dataclasses import dataclass

from .params import StrategyParams, hp
from .registry import Algorithm, register
from .rule import ClientRule, RuleOutput, trainable


@dataclass
class DittoParams(StrategyParams):
    lamda: float = hp(
        1.0,
        ge=0,
        help="weight lamda of the personal model's proximal term lamda/2 ||v - w_global||^2",
        source="FL-bench's Ditto (the paper tunes it in {0.01, 0.1, 1, 2})",
    )
    personal_epochs: int = hp(1, ge=1, help="local epochs of the personal model per round", source="FL-bench's Ditto")


class DittoRule(ClientRule):
    uses_state = True
    batchable = False
    needs_global = True

    def fit(self, epochs: int, max_steps: int | None = None):
        ctx = self.ctx
        stats = ctx.trainer.run(ctx.model, self.loss, epochs, max_steps=max_steps)
        self.personal = personal = ctx.build_model()
        personal.load_state_dict(ctx.state if ctx.state else ctx.global_state)
        lamda = float(ctx.params.lamda)
        pairs = [(p, ctx.global_state[name]) for name, p in trainable(personal)]

        def personal_loss(x, y):
            logits = personal(x)
            loss = ctx.criterion(logits, y)
            if lamda > 0:
                loss = loss + 0.5 * lamda * sum(((p - g) ** 2).sum() for p, g in pairs)
            return loss, logits

        ctx.trainer.run(personal, personal_loss, int(ctx.params.personal_epochs))
        return stats

    def on_evaluate_begin(self) -> None:
        if self.ctx.state:
            self.ctx.model.load_state_dict(self.ctx.state)

    def on_train_end(self, steps: int) -> RuleOutput:
        return RuleOutput(state={k: v.detach().cpu().clone() for k, v in self.personal.state_dict().items()})


@register
class Ditto(Algorithm):
    name = "ditto"
    summary = "global FedAvg model + personal model pulled to it by lamda/2 ||v - w||^2"
    paper = "Li et al. 2021, Ditto: Fair and Robust Federated Learning Through Personalization"
    Params = DittoParams
    Rule = DittoRule
    personal = True
