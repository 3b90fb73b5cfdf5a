"""Models: a registry of encoders wrapped in one layout, ``FedModel``.

Every model is ``encoder -> [projection head] -> classifier`` with state-dict keys
``encoder.*``, ``projection.*`` and ``classifier.*``; see :mod:`fedsim.models.heads`.
Adding an architecture is one file with one ``@register("name")`` builder and one
import line below.
"""

from __future__ import annotations

from fedsim.models.heads import FedModel, moon_projection_head
from fedsim.models.inspect import LayerRow, ModelReport, format_report, has_batchnorm, inspect_model
from fedsim.models.registry import ModelError, available, build_model, register, takes_tokens, token_models

# architectures register themselves on import; the order is the order of available()
# isort: off
from fedsim.models import simple_cnn as _simple_cnn  # noqa: F401
from fedsim.models import mlp as _mlp  # noqa: F401
from fedsim.models import resnet as _resnet  # noqa: F401
from fedsim.models import femnist_cnn as _femnist_cnn  # noqa: F401
from fedsim.models import char_lstm as _char_lstm  # noqa: F401
# isort: on

__all__ = [
    "FedModel",
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
]
