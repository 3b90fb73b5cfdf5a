"""The client half of an algorithm: a rule the local trainer calls around its steps.

The trainer (``fedsim.client.training.train_local``) runs, for one party and one round::

    rule.on_train_begin()                      # load state, set up references
    stats = rule.fit(epochs, max_steps)        # by default one run of the loop below
        for each mini-batch (x, y):
            loss, logits = rule.loss(x, y)     # the task loss plus the rule's terms
            loss.backward()
            rule.on_after_backward()           # gradient corrections
            optimizer.step()
    out = rule.on_train_end(steps)             # metrics, extra arrays, the party's new state

A rule that trains in phases or trains a second model (FedRep, Ditto, APFL, pFedMe)
overrides ``fit`` and calls ``self.ctx.trainer.run(model, loss, epochs, params=...)``
as often as it needs. ``on_evaluate_begin`` runs before a party evaluates the global
model on its own validation data (FedBN loads its BatchNorm layers there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .params import StrategyParams


@dataclass
class TrainContext:
    """What a client rule sees of one party's local training."""

    model: torch.nn.Module
    #: the weights received, on the device (only for rules with ``needs_global``)
    global_state: Mapping[str, torch.Tensor]
    #: the algorithm's hyperparameters (``strategy.*`` of the config)
    params: StrategyParams
    #: the ConfigRecord sent by the server this round (Flower's ``server-round``, ...)
    config: Mapping[str, Any]
    #: extra ArrayRecords of the message (SCAFFOLD's ``c``), on the device
    records: Mapping[str, Mapping[str, torch.Tensor]]
    #: the party's persisted state (client-state store), None at first
    state: dict[str, torch.Tensor] | None
    party: int
    server_round: int
    device: torch.device
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    lr: float
    momentum: float
    build_model: Callable[[], torch.nn.Module]
    #: labels of the party's training samples (int64, on the device)
    train_labels: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    num_classes: int = 0
    #: n_k / mean(n) over the parties that train: the per-party weight of FedDyn's and
    #: FedDC's reference code (their alpha_k = alpha / weight)
    party_weight: float = 1.0
    #: the party's mini-batch loop (``fedsim.client.training.LocalTrainer``), set before training
    trainer: Any = None


@dataclass
class RuleOutput:
    """What a rule adds to the reply, and the state it leaves with the party.

    ``state`` is saved for the party only if the server aggregates this reply (a reply
    screened out as failed or non-finite leaves the party's previous state in place).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    records: dict[str, Mapping[str, torch.Tensor]] = field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None
    #: the weights the reply carries (personalised algorithms keep the others at home);
    #: None: all of them
    shared_keys: list[str] | None = None


class ClientRule:
    """Plain local training (FedAvg's client). Subclasses override the hooks."""

    #: whether the rule reads or writes the party's entry in the client-state store
    uses_state: bool = False
    #: whether the batched (vmap) engine path (and DP-SGD) can run this rule: its ``loss``
    #: is the task's cross-entropy plus :meth:`functional_penalty`, it has no gradient
    #: hook and its ``on_train_end`` does not read ``ctx.model``. Plain training is; a
    #: subclass is only when it says so itself (``batchable = True`` in its own body), so a
    #: new rule with a loss of its own is never batched as plain cross-entropy by mistake
    batchable: bool = True
    #: whether the rule reads ``ctx.global_state`` (a copy of the received weights on the
    #: device); rules that do not get an empty mapping and save the copy
    needs_global: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "batchable" not in cls.__dict__:
            cls.batchable = False

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx

    def on_train_begin(self) -> None:
        """Called once the global weights are loaded, before the first step."""

    def on_evaluate_begin(self) -> None:
        """Called once the global weights are loaded, before local evaluation."""

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of one mini-batch."""
        logits = self.ctx.model(x)
        return self.ctx.criterion(logits, y), logits

    # the objective is the task loss itself: the trainer need not compute it again (an
    # override of ``loss`` is a function without this mark)
    loss.is_task_loss = True  # type: ignore[attr-defined]

    def on_after_backward(self) -> None:
        """Called between ``backward()`` and ``optimizer.step()``."""

    def fit(self, epochs: int, max_steps: int | None = None):
        """The round's local training: one run of the loop over all weights (returns
        ``fedsim.client.training.TrainStats``; ``stats.steps`` reaches ``on_train_end``)."""
        return self.ctx.trainer.run(
            self.ctx.model, self.loss, epochs, after_backward=self.on_after_backward, max_steps=max_steps
        )

    def on_train_end(self, steps: int) -> RuleOutput:
        """Called after the last step; ``steps`` is the number of optimiser steps."""
        return RuleOutput()

    @staticmethod
    def functional_penalty(
        hparams: StrategyParams, weights: Mapping[str, torch.Tensor], global_weights: Mapping[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """The rule's extra loss term as a pure function of one client's trainable weights.

        The batched (``torch.func.vmap``) engine calls it inside the vmapped loss.
        None: no extra term.
        """
        return None


def trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of the weights the optimiser updates."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]
