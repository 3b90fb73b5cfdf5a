"""What personalised algorithms share: which layers are personal, and a client rule
that keeps them at home.

Every fedsim model is ``encoder -> [projection] -> classifier`` (``fedsim.models``),
so the split into *head* and *body* follows from the keys: the **head** is the
classifier (``classifier.*``), the **body** is everything else (the encoder, and
MOON's projection head when the model has one). ``strategy.personal_layers`` names
the personal layers as comma-separated words: ``head``, ``body``, or state-dict key
prefixes (``projection,classifier`` makes the projection head personal too; ``""``
makes nothing personal, which turns FedPer and LG-FedAvg into FedAvg).

A :class:`PersonalLayersRule` loads the party's personal layers (from the
client-state store) over the global weights before training and before local
validation, keeps them after training, and sends only the shared layers; the server
averages what it receives and leaves the rest of the global model as it was
(:meth:`strategies.strategy.FedsimStrategy.aggregate_train`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .params import hp
from .registry import Algorithm
from .rule import ClientRule, RuleOutput

HEAD_PREFIX = "classifier"


def personal_layers_hp(default: str, source: str) -> str:
    """The ``personal_layers`` hyperparameter with ``default``."""
    return hp(
        default,
        help="personal layers: comma-separated head, body or state-dict key prefixes ('' = none)",
        source=source,
    )


def _matches(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def resolve_layers(spec: str, keys: Iterable[str]) -> list[str]:
    """The state-dict keys ``spec`` names, in ``keys``' order.

    >>> resolve_layers("head", ["encoder.w", "classifier.weight", "classifier.bias"])
    ['classifier.weight', 'classifier.bias']
    """
    keys = list(keys)
    words = [w.strip() for w in spec.split(",") if w.strip()]
    chosen: set[str] = set()
    for word in words:
        if word == "head":
            hit = [k for k in keys if _matches(k, HEAD_PREFIX)]
        elif word == "body":
            hit = [k for k in keys if not _matches(k, HEAD_PREFIX)]
        else:
            hit = [k for k in keys if _matches(k, word)]
        if not hit:
            raise ValueError(
                f"'{word}' names no layer of the model; allowed: head, body, or a prefix of its keys "
                f"({', '.join(sorted({k.split('.')[0] for k in keys}))})"
            )
        chosen.update(hit)
    return [k for k in keys if k in chosen]


def check_layers(spec: str, model: torch.nn.Module) -> str | None:
    """Why ``spec`` cannot name this model's personal layers, or None."""
    try:
        resolve_layers(spec, model.state_dict().keys())
    except ValueError as exc:
        return f"config key 'strategy.personal_layers': {exc}"
    return None


class PersonalLayersRule(ClientRule):
    """Trains every layer (by default); keeps ``personal_layers`` at home, sends the rest.

    Subclasses choose which parameters train in which phase by overriding ``fit``.
    """

    uses_state = True
    batchable = False

    def _split(self) -> None:
        keys = list(self.ctx.model.state_dict())
        self.personal = resolve_layers(self.ctx.params.personal_layers, keys)
        mine = set(self.personal)
        self.shared = [k for k in keys if k not in mine]

    def _load_own(self) -> None:
        self._split()
        if self.ctx.state:
            own = {k: v for k, v in self.ctx.state.items() if k in set(self.personal)}
            self.ctx.model.load_state_dict(own, strict=False)

    on_train_begin = _load_own
    on_evaluate_begin = _load_own

    def params_of(self, keys: list[str]) -> list[torch.nn.Parameter]:
        wanted = set(keys)
        return [p for n, p in self.ctx.model.named_parameters() if n in wanted and p.requires_grad]

    def on_train_end(self, steps: int) -> RuleOutput:
        sd = self.ctx.model.state_dict()
        state = {k: sd[k].detach().cpu().clone() for k in self.personal}
        return RuleOutput(state=state or None, shared_keys=self.shared)


class PersonalLayersAlgorithm(Algorithm):
    """An algorithm whose parties keep ``strategy.personal_layers`` (FedPer, FedRep,
    FedBABU, LG-FedAvg): each party has its own model, and a layer the model lacks is
    refused before anything is written."""

    Rule = PersonalLayersRule
    personal = True

    def check_model(self, params, model) -> str | None:
        return check_layers(params.personal_layers, model)
