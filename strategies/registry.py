"""The algorithm registry: a name -> an :class:`Algorithm` (both halves, hyperparameters,
constraints on the rest of the config).

Every module of the ``strategies`` package is imported once, the first time the
registry is read, so an algorithm's file registers itself with ``@register`` and
needs no import line anywhere (fedsim's one plug-in mechanism, :mod:`fedsim.util.plugins`).
An algorithm defined elsewhere (a user's package) registers the same way; naming its
module in ``FEDSIM_PLUGINS`` (or a ``fedsim.plugins`` entry point) has every process
import it, worker processes and Ray actors included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch

from fedsim.util.plugins import Plugin, Registry

from .params import StrategyParams, out_of_range
from .rule import ClientRule
from .strategy import FedAvgServer, FedsimStrategy


class Algorithm(Plugin):
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
    (FedNova needs SGD, MOON a projection head), or None; ``check_model(params,
    model)`` the same for the built model (layer names). A personalised algorithm
    (``personal = True``) says what each party's own model is with ``personalize``,
    evaluated as ``personal_*`` on the party's own test data (``eval.local_test``).
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    Rule: ClassVar[type[ClientRule]] = ClientRule
    Server: ClassVar[type[FedsimStrategy]] = FedAvgServer
    #: whether each party has a model of its own (evaluated as ``personal_*``)
    personal: ClassVar[bool] = False
    #: client-level DP (``privacy.mode`` central-*/client-*) hands the server half a cohort whose models
    #: average to the noised mean of the clipped updates: private when the server reads the replies only
    #: through their mean. Why this algorithm's server does not (it picks among the clients, weighs them by
    #: what they report, or uses arrays uploaded besides the model), or None.
    client_dp_refusal: ClassVar[str | None] = None
    #: why a lossy ``comm.compressor`` cannot compress this algorithm's replies (its server
    #: state and the parties' are two halves of one quantity that a lossy update splits), or None
    compression_refusal: ClassVar[str | None] = None
    #: aggregates by a robust statistic instead of a (weighted) mean (Krum, the median, ...):
    #: defences built on the mean (centred clipping) refuse it
    robust: ClassVar[bool] = False

    def server(self, params: StrategyParams) -> FedsimStrategy:
        """The server half for these hyperparameters."""
        return self.Server(params)

    def check(self, cfg: Any) -> str | None:
        """Why ``cfg`` (fedsim's ExperimentConfig) cannot run this algorithm, or None."""
        return None

    def resolve(self, params: StrategyParams, cfg: Any) -> tuple[StrategyParams, list[str]]:
        """The hyperparameters a run of ``cfg`` uses: ``params`` with what the rest of the
        config decides filled in (a robust aggregator's f from the attack), and one line
        per value so decided, printed when the run starts. By default ``params`` as they are."""
        return params, []

    def check_model(self, params: StrategyParams, model: torch.nn.Module) -> str | None:
        """Why this model cannot run the algorithm with ``params`` (a layer that is
        not there), or None. Runs before anything is written."""
        return None

    def personalize(
        self,
        params: StrategyParams,
        global_state: Mapping[str, torch.Tensor],
        client_state: Mapping[str, torch.Tensor] | None,
        finetune: Callable[[Mapping[str, torch.Tensor], int], Mapping[str, torch.Tensor]],
    ) -> Mapping[str, torch.Tensor] | None:
        """A party's own model from the global weights and its client state (None when
        it has not trained yet); None when the algorithm has no personal models.

        By default (``personal = True``) the party's saved entries replace the global
        ones: its personal layers (FedPer, FedRep, LG-FedAvg), its BatchNorm layers
        (FedBN) or its whole model (local, Ditto, pFedMe). ``finetune(state, epochs)``
        fine-tunes a state on the party's training data (FedBABU)."""
        if not self.personal:
            return None
        out = dict(global_state)
        if client_state:
            out.update({k: v for k, v in client_state.items() if k in out})
        return out


ALGORITHMS: Registry[Algorithm] = Registry("strategy", __package__, section="strategy", base=StrategyParams)
#: class decorator: register an :class:`Algorithm` subclass under its ``name``
register = ALGORITHMS.register
unregister = ALGORITHMS.unregister
available = ALGORITHMS.available
get = ALGORITHMS.get


def params_of(name: str) -> type[StrategyParams]:
    return get(name).Params


def resolve(cfg: Any) -> tuple[StrategyParams, list[str]]:
    """``cfg.strategy`` as the run uses it, and the lines saying what the config decided
    (:meth:`Algorithm.resolve`)."""
    return get(cfg.strategy.name).resolve(cfg.strategy, cfg)


def make_params(values: dict[str, Any]) -> StrategyParams:
    """The hyperparameters of ``values['name']`` from a mapping of already-typed values."""
    algo = get(values.get("name", "fedavg"))
    return algo.Params(**values)


__all__ = [
    "Algorithm",
    "available",
    "get",
    "make_params",
    "out_of_range",
    "params_of",
    "register",
    "resolve",
    "unregister",
]
