"""Model registry: a name -> an encoder builder; :func:`build_model` wraps it in a FedModel.

An architecture is one module holding one decorated builder::

    @register("my-net")
    def build(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, int]:
        return encoder, feature_dim

The builder returns only the encoder (input -> flat representation ``h`` of size
``feature_dim``); the projection head and the classifier are added by
:class:`~fedsim.models.heads.FedModel`, so every architecture has the same
``encoder.* / projection.* / classifier.*`` layout.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
from torch import nn

from fedsim.config.schema import ModelConfig
from fedsim.errors import ConfigError
from fedsim.models.heads import FedModel

EncoderBuilder = Callable[[ModelConfig, tuple[int, ...], int], tuple[nn.Module, int]]

# name -> builder, in registration order (available() lists them in that order)
_REGISTRY: dict[str, EncoderBuilder] = {}
# models whose encoder reads int64 token sequences (an embedding first), not real values
_TOKENS: set[str] = set()


class ModelError(ConfigError, ValueError):
    """A model cannot be built as asked (unknown name, input shape it cannot take).

    A :class:`ConfigError` so the CLI reports it as one line with exit code 2, and a
    :class:`ValueError` for callers that use the library without fedsim's errors.
    """


def register(name: str, *, tokens: bool = False) -> Callable[[EncoderBuilder], EncoderBuilder]:
    """Decorator: register ``fn(cfg, input_shape, num_classes) -> (encoder, feature_dim)``.

    ``tokens=True``: the encoder reads int64 token sequences ``(B, L)`` (text datasets);
    the config check pairs such models with text data only.
    """

    def deco(fn: EncoderBuilder) -> EncoderBuilder:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model '{name}' is already registered (by {_REGISTRY[name].__module__})")
        _REGISTRY[name] = fn
        if tokens:
            _TOKENS.add(name)
        return fn

    return deco


def takes_tokens(name: str) -> bool:
    """Whether model ``name`` reads int64 token sequences."""
    return name in _TOKENS


def token_models() -> list[str]:
    """The registered models that read token sequences, in registration order."""
    return [n for n in _REGISTRY if n in _TOKENS]


def available() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


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
    if cfg.name not in _REGISTRY:
        close = difflib.get_close_matches(str(cfg.name), list(_REGISTRY), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ModelError(
            f"config key 'model.name' = {cfg.name!r} is not a known model{hint}; allowed: {', '.join(available())}"
        )
    shape = _check_shape(input_shape)
    if int(num_classes) < 1:
        raise ModelError(f"num_classes = {num_classes} must be >= 1")
    if cfg.projection_head and int(cfg.proj_dim) < 1:
        raise ModelError(f"config key 'model.proj_dim' = {cfg.proj_dim} must be >= 1")
    if not 0.0 <= float(cfg.dropout) < 1.0:
        raise ModelError(f"config key 'model.dropout' = {cfg.dropout} must be in [0, 1)")
    encoder, feature_dim = _REGISTRY[cfg.name](cfg, shape, int(num_classes))
    return FedModel(
        encoder,
        int(feature_dim),
        int(num_classes),
        projection_head=bool(cfg.projection_head),
        proj_dim=int(cfg.proj_dim),
        dropout=float(cfg.dropout),
        input_shape=shape,
        name=cfg.name,
        input_dtype=torch.int64 if cfg.name in _TOKENS else torch.float32,
    )
