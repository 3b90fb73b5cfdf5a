"""Registry: a strategy name -> its server Strategy factory and its client rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import ClientRule

_REGISTRY: dict[str, "StrategySpec"] = {}


@dataclass(frozen=True)
class StrategySpec:
    """One federated algorithm: both halves, and what it needs from the config."""

    name: str
    #: cfg (fedsim's ExperimentConfig) -> a Flower Strategy that mixes in FedsimStrategy
    server: Callable[[Any], Any]
    #: the client half, instantiated per party and round by the local trainer
    client_rule: type[ClientRule] = ClientRule
    requires_projection_head: bool = False
    summary: str = ""


def register(spec: StrategySpec) -> StrategySpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"strategy '{spec.name}' is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def available() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> StrategySpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy '{name}'; allowed: {', '.join(available())}") from None
