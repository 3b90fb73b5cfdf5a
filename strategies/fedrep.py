"""FedRep (Collins et al. 2021, "Exploiting Shared Representations for Personalized
Federated Learning").

Client, each round: the party puts its own head on the global body, trains the head
alone for ``head_epochs`` epochs (body fixed), then the body alone for
``train.epochs`` epochs (head fixed), and sends only the body:

    h_k <- argmin_h f_k(phi^t, h)          (head_epochs epochs of SGD)
    phi_k <- argmin_phi f_k(phi, h_k)      (train.epochs epochs)

Server: FedAvg over the body, ``phi^{t+1} = sum_k (n_k / n) phi_k``. The personalised
model is the global body with the party's head. With ``head_epochs: 0`` only the body
trains (the head stays as received). Each phase has its own optimiser (fresh
momentum), as in the paper's code; the reported training loss is the body phase's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .params import StrategyParams, hp
from .personal import PersonalLayersAlgorithm, PersonalLayersRule, personal_layers_hp
from .registry import register


@dataclass
class FedRepParams(StrategyParams):
    personal_layers: str = personal_layers_hp("head", "FedRep (Collins et al. 2021): the classifier layers")
    head_epochs: int = hp(
        10, ge=0, help="local epochs of the head, before the body's", source="FedRep (Collins et al. 2021)"
    )


class FedRepRule(PersonalLayersRule):
    def fit(self, epochs: int, max_steps: int | None = None):
        trainer, model = self.ctx.trainer, self.ctx.model
        head_epochs = int(self.ctx.params.head_epochs)
        if head_epochs > 0 and self.personal:
            trainer.run(model, self.loss, head_epochs, params=self.params_of(self.personal))
        return trainer.run(model, self.loss, epochs, params=self.params_of(self.shared), max_steps=max_steps)


@register
class FedRep(PersonalLayersAlgorithm):
    name = "fedrep"
    summary = "head trained first, then the body; only the body is shared"
    paper = "Collins et al. 2021, Exploiting Shared Representations for Personalized Federated Learning"
    Params = FedRepParams
    Rule = FedRepRule
