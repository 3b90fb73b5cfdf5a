"""Multi-layer perceptron: flatten -> [Linear, ReLU, (Dropout)] per width in ``model.hidden``.

The representation is the last hidden layer (d = hidden[-1]). With ``hidden == []`` the
encoder is only the flatten (d = prod(input_shape)) and the FedModel is multinomial
logistic regression, ``softmax(W x + b)`` — the model of FedProx's Synthetic(alpha, beta)
experiments. Works on tabular (D,) and on image (C, H, W) inputs alike.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from torch import nn

from fedsim.models.registry import ModelError, register
from fedsim.schema.sections import ModelConfig
from fedsim.util.params import hp


@dataclass
class MLPParams(ModelConfig):
    """``model.*`` with ``mlp``: the common keys and the hidden layers."""

    hidden: list[int] = hp(
        [200, 200],
        help="the hidden layers' widths; [] = multinomial logistic regression",
        source="FedAvg's 2NN (McMahan et al. 2017)",
        text="a list of widths >= 1",
    )


def _check_widths(cfg: Any) -> str | None:
    if any(h < 1 for h in cfg.model.hidden):
        return f"config key 'model.hidden' = {list(cfg.model.hidden)}: every layer width must be >= 1"
    return None


@register(
    "mlp",
    check=_check_widths,
    summary="multi-layer perceptron on flattened inputs (model.hidden); [] is logistic regression",
    paper="McMahan et al. 2017, Communication-Efficient Learning (2NN); FedProx's logistic regression",
    Params=MLPParams,
)
def build_mlp(cfg: MLPParams, input_shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, int]:
    in_dim = math.prod(input_shape)
    hidden = [int(h) for h in cfg.hidden]
    if any(h < 1 for h in hidden):
        raise ModelError(f"config key 'model.hidden' = {hidden}: every layer width must be >= 1")
    # named layers (fc1, fc2, ...): state-dict keys do not shift when dropout is on
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten(1))
    width = in_dim
    for i, h in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width, h)
        layers[f"relu{i}"] = nn.ReLU()
        # none after the last layer: FedModel applies dropout before the classifier
        if cfg.dropout > 0 and i < len(hidden):
            layers[f"drop{i}"] = nn.Dropout(float(cfg.dropout))
        width = h
    return nn.Sequential(layers), width
