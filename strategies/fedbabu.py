"""FedBABU (Oh et al. 2022, "FedBABU: Towards Enhanced Representation for Federated
Image Classification").

Client: the head (``personal_layers``, the classifier) stays at its random
initialisation during federated training: only the body is trained and sent. Every
party starts from the same head, the global model's, which the server never changes.
Server: FedAvg over the body. Personalisation: the global model fine-tuned, head and
body, for ``finetune_epochs`` local epochs on the party's training data (with
``train.*``); that model is the party's ``personal_*`` model. The party keeps no
state between rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from .params import StrategyParams, hp
from .personal import PersonalLayersAlgorithm, personal_layers_hp, resolve_layers
from .registry import register
from .rule import ClientRule, RuleOutput


@dataclass
class FedBABUParams(StrategyParams):
    personal_layers: str = personal_layers_hp("head", "FedBABU (Oh et al. 2022): the classifier, frozen")
    finetune_epochs: int = hp(
        5,
        ge=0,
        help="local epochs of fine-tuning (head and body) that make a party's personal model",
        source="Flower's FedBABU baseline (num-finetune-epochs = 5)",
    )


class FedBABURule(ClientRule):
    batchable = False

    def on_train_begin(self) -> None:
        keys = list(self.ctx.model.state_dict())
        frozen = set(resolve_layers(self.ctx.params.personal_layers, keys))
        self.shared = [k for k in keys if k not in frozen]

    def fit(self, epochs: int, max_steps: int | None = None):
        body = [p for n, p in self.ctx.model.named_parameters() if n in set(self.shared) and p.requires_grad]
        return self.ctx.trainer.run(self.ctx.model, self.loss, epochs, params=body, max_steps=max_steps)

    def on_train_end(self, steps: int) -> RuleOutput:
        return RuleOutput(shared_keys=self.shared)


@register
class FedBABU(PersonalLayersAlgorithm):
    name = "fedbabu"
    summary = "head frozen at its initialisation, body shared; personalised by fine-tuning"
    paper = "Oh et al. 2022, FedBABU: Towards Enhanced Representation for Federated Image Classification"
    Params = FedBABUParams
    Rule = FedBABURule

    def personalize(self, params, global_state, client_state, finetune):
        return finetune(global_state, int(params.finetune_epochs))
