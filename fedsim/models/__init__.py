"""Models: a registry of encoders wrapped in one layout, ``FedModel``.

Every model is ``encoder -> [projection head] -> classifier`` with state-dict keys
``encoder.*``, ``projection.*`` and ``classifier.*``; see :mod:`fedsim.models.heads`.
Adding an architecture is one file in this package with one ``@register("name", ...)``
builder (:mod:`fedsim.models.registry`); the registry finds it on first use.
"""

from __future__ import annotations

from fedsim.models.heads import FedModel, moon_projection_head
from fedsim.models.inspect import LayerRow, ModelReport, format_report, has_batchnorm, inspect_model
from fedsim.models.registry import (
    MODELS,
    Model,
    ModelError,
    available,
    build_model,
    register,
    takes_tokens,
    token_models,
    unregister,
)

__all__ = [
    "FedModel",
    "MODELS",
    "Model",
    "ModelError",
    "LayerRow",
    "ModelReport",
    "available",
    "build_model",
    "format_report",
    "has_batchnorm",
    "inspect_model",
    "moon_projection_head",
    "register",
    "takes_tokens",
    "token_models",
    "unregister",
]
