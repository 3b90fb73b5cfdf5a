"""Federated algorithms: one file per algorithm, holding its hyperparameters, its Flower
server Strategy and its client-side training rule.

An algorithm's file registers itself (``@register`` on an :class:`Algorithm`
subclass); the registry imports every module of this package on first use, so adding
an algorithm is adding its file. ``strategies`` never imports fedsim's engine, CLI or
run store; fedsim reaches the algorithms through this registry. How to write one:
``docs/algorithms.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .extension import ReplyRule, ServerExtension
from .params import HpField, StrategyParams, hp, hyperparameters, out_of_range
from .registry import Algorithm, available, get, make_params, register, resolve, unregister
from .rule import ClientRule, RuleOutput, TrainContext, trainable
from .strategy import (
    Aggregate,
    ClientOutcome,
    CohortFailure,
    FedAvgServer,
    FederationSetup,
    FedsimStrategy,
    NonFiniteModel,
    RoundHooks,
    RoundLog,
)

__all__ = [
    "Aggregate",
    "Algorithm",
    "ClientOutcome",
    "ClientRule",
    "CohortFailure",
    "FedAvgServer",
    "FederationSetup",
    "FedsimStrategy",
    "HpField",
    "NonFiniteModel",
    "RoundHooks",
    "ReplyRule",
    "RoundLog",
    "RuleOutput",
    "ServerExtension",
    "StrategyParams",
    "TrainContext",
    "available",
    "build",
    "get",
    "hp",
    "hyperparameters",
    "make_params",
    "out_of_range",
    "register",
    "resolve",
    "table_markdown",
    "trainable",
    "unregister",
]


def build(params: StrategyParams, extensions: Iterable[ServerExtension] = ()) -> FedsimStrategy:
    """The server Strategy of ``params.name`` with these hyperparameters, composed with
    what the run adds to its round (``extensions``, in the order they act:
    ``strategies/extension.py``)."""
    return get(params.name).server(params).compose(extensions)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def table_markdown() -> str:
    """The README's strategy table: every algorithm, its hyperparameters and defaults."""
    lines = ["| name | what it does | `strategy.*` (default, allowed) | paper |", "| --- | --- | --- | --- |"]
    for name in available():
        algo = get(name)
        hps = (
            "; ".join(f"`{h.name}` ({_fmt(h.default)}, {h.info.allowed()})" for h in hyperparameters(algo.Params))
            or "-"
        )
        lines.append(f"| `{name}` | {algo.summary} | {hps} | {algo.paper} |".replace("||", "‖"))
    return "\n".join(lines) + "\n"
