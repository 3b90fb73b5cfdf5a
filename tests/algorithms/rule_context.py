"""A TrainContext for driving a client rule by hand (CPU, one party)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from strategies.params import StrategyParams
from strategies.rule import TrainContext


def rule_context(model: nn.Module, build_model, **fields: Any) -> TrainContext:
    """Party 0 of round 1 on the CPU: cross-entropy, lr 0.1, no momentum, nothing
    received but the weights (``global_state``: a detached copy of ``model``'s state);
    ``fields`` override any of these."""
    ctx = {
        "global_state": OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items()),
        "params": StrategyParams(),
        "config": {},
        "records": {},
        "state": None,
        "party": 0,
        "server_round": 1,
        "device": torch.device("cpu"),
        "criterion": F.cross_entropy,
        "lr": 0.1,
        "momentum": 0.0,
    }
    ctx.update(fields)
    return TrainContext(model=model, build_model=build_model, **ctx)
