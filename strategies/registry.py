"""The algorithm registry: a name -> an :class:`Algorithm` (both halves, hyperparameters,
constraints on the rest of the config).

Every module of the ``strategies`` package is imported once, the first time the
registry is read, so an algorithm's file registers itself with ``@register`` and
needs no import line anywhere. An algorithm defined elsewhere (a test, a user's
package) registers the same way; it must be imported before the run starts (and in
every worker process, for ``engine.workers > 1`` or Ray).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Any, ClassVar, TypeVar

from .params import StrategyParams, hyperparameters, out_of_range
from .rule import ClientRule
from .strategy import FedAvgServer, FedsimStrategy

_REGISTRY: dict[str, Algorithm] = {}
_DISCOVERED = False

A = TypeVar("A", bound=type)


class Algorithm:
    """One federated algorithm. Subclass it in the algorithm's file and decorate the
    subclass with :func:`register`::

        @register
        class FedProx(Algorithm):
            name = "fedprox"
            summary = "FedAvg + proximal term mu/2 ||w - w_global||^2"
            paper = "Li et al. 2020, Federated Optimization in Heterogeneous Networks"
            Params = FedProxParams      # default: no hyperparameters
            Rule = FedProxRule          # default: plain local training
            # Server: default FedAvg's float64 weighted average

    ``check(cfg)`` returns why the rest of the config cannot run this algorithm
    (FedNova needs SGD, MOON a projection head), or None.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    Rule: ClassVar[type[ClientRule]] = ClientRule
    Server: ClassVar[type[FedsimStrategy]] = FedAvgServer
    #: client-level DP (``privacy.mode`` central-*/client-*) hands the server half a cohort whose models
    #: average to the noised mean of the clipped updates: private when the server reads the replies only
    #: through their mean. Why this algorithm's server does not (it picks among the clients, weighs them by
    #: what they report, or uses arrays uploaded besides the model), or None.
    client_dp_refusal: ClassVar[str | None] = None

    def server(self, params: StrategyParams) -> FedsimStrategy:
        """The server half for these hyperparameters."""
        return self.Server(params)

    def check(self, cfg: Any) -> str | None:
        """Why ``cfg`` (fedsim's ExperimentConfig) cannot run this algorithm, or None."""
        return None


def register(cls: A) -> A:
    """Class decorator: register an :class:`Algorithm` subclass under its ``name``."""
    algo = cls()
    name = getattr(algo, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
        raise ValueError(
            f"strategy '{name}' is registered twice ({type(_REGISTRY[name]).__module__} and {cls.__module__})"
        )
    hyperparameters(algo.Params)  # every field declared with hp(): fails at import, not at run time
    _REGISTRY[name] = algo
    return cls


def unregister(name: str) -> None:
    """Remove an algorithm (tests that define their own)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for mod in pkgutil.iter_modules([os.path.dirname(__file__)]):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__package__}.{mod.name}")


def available() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> Algorithm:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy '{name}'; allowed: {', '.join(available())}") from None


def params_of(name: str) -> type[StrategyParams]:
    return get(name).Params


def make_params(values: dict[str, Any]) -> StrategyParams:
    """The hyperparameters of ``values['name']`` from a mapping of already-typed values."""
    algo = get(values.get("name", "fedavg"))
    return algo.Params(**values)


__all__ = ["Algorithm", "available", "get", "make_params", "out_of_range", "params_of", "register", "unregister"]
