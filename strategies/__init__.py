"""Federated algorithms: one file per algorithm, holding its Flower server Strategy and
its client-side training rule (DESIGN.md, decision 3). ``strategies`` never imports
fedsim's engine, CLI or run store; fedsim reaches the algorithms through this registry.
"""

from __future__ import annotations

from typing import Any

from .base import ClientRule, FedsimStrategy, FederationSetup, RuleOutput, TrainContext
from .registry import StrategySpec, available, get, register

# Each module registers itself on import; the order is the README's.
from . import fedavg, fedprox, scaffold, fednova, moon, fedbn, builtins  # noqa: E402,F401

__all__ = [
    "ClientRule",
    "FedsimStrategy",
    "FederationSetup",
    "RuleOutput",
    "StrategySpec",
    "TrainContext",
    "available",
    "build",
    "check_config",
    "get",
    "register",
]


def build(cfg: Any) -> FedsimStrategy:
    """The server Strategy named by ``cfg.strategy.name``."""
    return get(cfg.strategy.name).server(cfg)


def check_config(cfg: Any) -> None:
    """Raise ValueError-derived fedsim ConfigError for settings an algorithm cannot run with."""
    from fedsim.errors import ConfigError

    spec = get(cfg.strategy.name)
    if spec.requires_projection_head and not cfg.model.projection_head:
        raise ConfigError(
            f"strategy '{spec.name}' needs model.projection_head: true (its loss compares projections)"
        )
    if spec.name == "fednova" and cfg.train.optimizer != "sgd":
        raise ConfigError(
            f"strategy 'fednova' needs train.optimizer: sgd (its a_i formula is for SGD with momentum); got '{cfg.train.optimizer}'"
        )
