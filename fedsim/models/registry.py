"""Model registry: a name -> a :class:`Model` plug-in (an encoder builder); :func:`build_model`
wraps the encoder in a FedModel.

An architecture is one module of this package (found on first use: no import line
anywhere) holding one decorated builder with its declarations::

    @dataclass
    class MyNetParams(ModelConfig):          # model.* with this model: the common keys + its own
        width: int = hp(64, ge=1, help="...", source="...")

    @register("my-net", summary="...", paper="...", Params=MyNetParams)
    def build(cfg: MyNetParams, input_shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, int]:
        return encoder, feature_dim

The builder returns only the encoder (input -> flat representation ``h`` of size
``feature_dim``); the projection head and the classifier are added by
:class:`~fedsim.models.heads.FedModel`, so every architecture has the same
``encoder.* / projection.* / classifier.*`` layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fedsim.errors import ConfigError
from fedsim.models.heads import FedModel
from fedsim.schema.sections import ModelConfig
from fedsim.util.plugins import Plugin, Registry, close_match

EncoderBuilder = Callable[[ModelConfig, tuple[int, ...], int], tuple[nn.Module, int]]
CheckFn = Callable[[Any], "str | None"]


class ModelError(ConfigError, ValueError):
    """A model cannot be built as asked (unknown name, input shape it cannot take).

    A :class:`ConfigError` so the CLI reports it as one line with exit code 2, and a
    :class:`ValueError` for callers that use the library without fedsim's errors.
    """


class Model(Plugin):
    """One architecture: ``build`` returns its encoder and the encoder's output width."""

    Params: type = ModelConfig
    #: the encoder reads int64 token sequences (B, L) (text data sets), not real values
    tokens: bool = False

    def build(self, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, int]:
        raise NotImplementedError


class _BuilderModel(Model):
    """The plug-in :func:`register` makes of a builder function and its declarations."""

    def __init__(self, name: str, fn: EncoderBuilder, tokens: bool, check: CheckFn | None, summary: str, paper: str,
                 Params: type) -> None:  # fmt: skip
        self.name, self.fn, self.tokens, self._check = name, fn, tokens, check
        self.summary, self.paper, self.Params = summary, paper, Params

    def build(self, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, int]:
        return self.fn(cfg, input_shape, num_classes)

    def check(self, cfg: Any) -> str | None:
        return self._check(cfg) if self._check is not None else None


#: the models: the modules of fedsim/models, listed in this order (then any other file's)
MODELS: Registry[Model] = Registry(
    "model",
    "fedsim.models",
    section="model",
    base=ModelConfig,
    ordered=True,
    first=("simple_cnn", "mlp", "resnet", "femnist_cnn", "char_lstm"),
    error=ModelError,
)


def register(
    name: str | type[Model],
    *,
    tokens: bool = False,
    check: CheckFn | None = None,
    summary: str = "",
    paper: str = "",
    Params: type = ModelConfig,
) -> Any:
    """Decorator: register ``fn(cfg, input_shape, num_classes) -> (encoder, feature_dim)``
    as model ``name`` (or, on a :class:`Model` subclass, that class).

    ``tokens=True``: the encoder reads int64 token sequences ``(B, L)`` (text datasets);
    the config check pairs such models with text data only. ``check(cfg)`` says why a
    config cannot use the model; ``Params`` is its ``model.*`` dataclass.
    """
    if isinstance(name, type):
        return MODELS.register(name)

    def deco(fn: EncoderBuilder) -> EncoderBuilder:
        MODELS.add(_BuilderModel(name, fn, tokens, check, summary, paper, Params), fn.__module__)
        return fn

    return deco


def unregister(name: str) -> None:
    """Remove a model (tests that register their own)."""
    MODELS.unregister(name)


def takes_tokens(name: str) -> bool:
    """Whether model ``name`` reads int64 token sequences."""
    return name in MODELS and MODELS.get(name).tokens


def token_models() -> list[str]:
    """The registered models that read token sequences, in registration order."""
    return [n for n in available() if MODELS.get(n).tokens]


def available() -> list[str]:
    """Registered model names, in registration order."""
    return MODELS.available()


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ModelError(f"input_shape {input_shape!r} must be a tuple of ints: (C, H, W) or (D,)") from None
    if not shape or any(s < 1 for s in shape):
        raise ModelError(f"input_shape {shape} must be non-empty with every size >= 1: (C, H, W) or (D,)")
    return shape


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> FedModel:
    """Build ``cfg.name`` for inputs of ``input_shape`` (no batch dim) and ``num_classes``.

    Weights come from torch's default initialisers on the global RNG only, so building
    under the same ``torch.manual_seed`` gives the same weights.
    """
    if cfg.name not in MODELS:
        raise ModelError(
            f"config key 'model.name' = {cfg.name!r} is not a known model{close_match(cfg.name, available())}; "
            f"allowed: {', '.join(available())}"
        )
    shape = _check_shape(input_shape)
    if int(num_classes) < 1:
        raise ModelError(f"num_classes = {num_classes} must be >= 1")
    if cfg.projection_head and int(cfg.proj_dim) < 1:
        raise ModelError(f"config key 'model.proj_dim' = {cfg.proj_dim} must be >= 1")
    if not 0.0 <= float(cfg.dropout) < 1.0:
        raise ModelError(f"config key 'model.dropout' = {cfg.dropout} must be in [0, 1)")
    model = MODELS.get(cfg.name)
    encoder, feature_dim = model.build(cfg, shape, int(num_classes))
    return FedModel(
        encoder,
        int(feature_dim),
        int(num_classes),
        projection_head=bool(cfg.projection_head),
        proj_dim=int(cfg.proj_dim),
        dropout=float(cfg.dropout),
        input_shape=shape,
        name=cfg.name,
        input_dtype=torch.int64 if model.tokens else torch.float32,
    )
