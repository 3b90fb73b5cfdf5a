"""FedPer (Arivazhagan et al. 2019, "Federated Learning with Personalization Layers").

Client: the model is a shared body and a personal head. Each round the party loads
the global body, puts its own head back on (the head it left last time; the global
model's, i.e. the initial one, before its first round), trains every layer for
``train.epochs`` and sends only the body. Server: FedAvg over the body,

    body^{t+1} = sum_k (n_k / n) body_k^{t+1},

the global model's head is never updated. The party's personalised model is the
global body with its own head (``personal_*`` metrics). With
``personal_layers: ""`` nothing is personal and FedPer is FedAvg, weight for weight.
"""

from __future__ import annotations

from dataclasses import dataclass

from .params import StrategyParams
from .personal import PersonalLayersAlgorithm, personal_layers_hp
from .registry import register


@dataclass
class FedPerParams(StrategyParams):
    personal_layers: str = personal_layers_hp("head", "FedPer (Arivazhagan et al. 2019): the classifier layers")


@register
class FedPer(PersonalLayersAlgorithm):
    name = "fedper"
    summary = "shared body, personal head (kept by each party)"
    paper = "Arivazhagan et al. 2019, Federated Learning with Personalization Layers"
    Params = FedPerParams
