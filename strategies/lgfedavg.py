"""LG-FedAvg (Liang et al. 2020, "Think Locally, Act Globally: Federated Learning with
Local and Global Representations").

The mirror image of FedPer: each party keeps its own representation (the body:
encoder, and the projection head when the model has one) and shares the head.
Client: the party loads the global head over its own body, trains every layer for
``train.epochs`` and sends only the head. Server: FedAvg over the head,
``head^{t+1} = sum_k (n_k / n) head_k^{t+1}``; the global body is never updated.
Only the head crosses the network (``bytes_up`` shows the saving). The personalised
model is the party's own body with the global head. ``personal_layers: ""`` is FedAvg.
"""

from __future__ import annotations

from dataclasses import dataclass

from .params import StrategyParams
from .personal import PersonalLayersAlgorithm, personal_layers_hp
from .registry import register


@dataclass
class LGFedAvgParams(StrategyParams):
    personal_layers: str = personal_layers_hp("body", "LG-FedAvg (Liang et al. 2020): local representations")


@register
class LGFedAvg(PersonalLayersAlgorithm):
    name = "lg-fedavg"
    summary = "personal body (local representation), shared head"
    paper = "Liang et al. 2020, Think Locally, Act Globally: Federated Learning with Local and Global Representations"
    Params = LGFedAvgParams
