"""Flower's own server strategies, selectable by name, with the plain local trainer.

=============== ==================================================== ==============================
name            Flower class (paper)                                 server rule
=============== ==================================================== ==============================
fedavgm         FedAvgM (Hsu et al. 2019)                            w -= lr_s m, m = beta m + (w - avg)
fedadam         FedAdam (Reddi et al. 2021)                          Adam step on delta = avg - w
fedyogi         FedYogi (Reddi et al. 2021)                          Yogi step on delta
fedadagrad      FedAdagrad (Reddi et al. 2021)                       Adagrad step on delta
fedmedian       FedMedian (Yin et al. 2018)                          coordinate-wise median
fedtrimmedavg   FedTrimmedAvg (Yin et al. 2018)                      coordinate-wise trimmed mean
=============== ==================================================== ==============================

Each is a class of its own, :class:`~strategies.strategy.FedsimStrategy` mixed into the
Flower class (``class FedAdamServer(ServerOptimizer, fs.FedAdam)``), so Flower's
aggregation runs unchanged on the cohort's replies; its server state (momentum,
moments), which Flower keeps in undocumented attributes, is read and written through
``fedsim.util.flower_compat`` and checkpointed.

Server optimisers (FedAvgM and the FedOpt family) step only the trainable
parameters: Flower sees the replies and its remembered global model without the
buffers, and the buffers (BatchNorm's running statistics and step counter) are
averaged as in FedAvg. An optimiser step on a running variance can make it negative
(NaN outputs): with a ResNet, FedYogi's test loss reached 6e13 before this.

The clients' learning rate of Reddi et al. (eta_l) is ``train.lr``: Flower's FedOpt
classes store an ``eta_l`` but never use it, so fedsim does not take one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, Message
from flwr.serverapp import strategy as fs

from fedsim.util import flower_compat as fc

from .arrays import record_to_state
from .params import StrategyParams, hp
from .registry import Algorithm, register
from .robust import DP_REFUSAL
from .strategy import Aggregate, ClientOutcome, FedsimStrategy


class FlowerAggregation(FedsimStrategy):
    """Aggregate through the Flower class's own ``aggregate_train`` (after screening)."""

    def flower_aggregate(self, server_round: int, replies: list[Message]) -> OrderedDict[str, torch.Tensor]:
        arrays, _ = super(FedsimStrategy, self).aggregate_train(server_round, replies)  # type: ignore[misc]
        return record_to_state(arrays)

    def aggregate(self, server_round: int, global_state, outcomes: list[ClientOutcome]) -> Aggregate:
        return Aggregate(self.flower_aggregate(server_round, [o.message for o in outcomes]))


class ServerOptimizer(FlowerAggregation):
    """A Flower server optimiser restricted to the trainable parameters (see module doc).

    ``state_attributes`` name Flower's server state (``fedsim.util.flower_compat``), which
    is read and restored through the compat accessors, not as attributes of fedsim's own.
    """

    def get_state(self, name: str) -> Any:
        return fc.get_server_state(self, name)

    def set_state(self, name: str, value: Any) -> None:
        fc.set_server_state(self, name, value)

    def _params_only(self, arrays):
        """The trainable entries of an ArrayRecord or a dict of arrays."""
        keep = {k: v for k, v in arrays.items() if self.setup.is_param(k)}
        return ArrayRecord(keep) if isinstance(arrays, ArrayRecord) else keep

    def configure_train(self, server_round, arrays, config, grid):
        messages = super().configure_train(server_round, arrays, config, grid)
        # the global model Flower remembers (FedOpt: set every round; FedAvgM: once)
        remembered = fc.remembered_global(self)
        if remembered is not None:
            fc.set_remembered_global(self, self._params_only(remembered))
        return messages

    def aggregate(self, server_round: int, global_state, outcomes: list[ClientOutcome]) -> Aggregate:
        # the replies are decoded already (outcome.state); Flower reads their content,
        # so the buffers are dropped from it in place (Flower's FedMedian pops from it too)
        for o in outcomes:
            rec = o.message.content.array_records["arrays"]
            for key in [k for k in rec if not self.setup.is_param(k)]:
                del rec[key]
        stepped = self.flower_aggregate(server_round, [o.message for o in outcomes])
        avg = self.average(outcomes)
        return Aggregate(OrderedDict((k, stepped[k] if k in stepped else avg[k]) for k in global_state))


@dataclass
class FedAvgMParams(StrategyParams):
    server_lr: float = hp(1.0, gt=0, help="server learning rate lr_s", source="Flower's FedAvgM; Hsu et al. 2019")
    server_momentum: float = hp(
        0.9,
        ge=0,
        lt=1,
        help="server momentum beta",
        source="Hsu et al. 2019 (beta = 0.9; Flower's default 0.0 is plain FedAvg)",
    )


@dataclass
class FedOptParams(StrategyParams):
    eta: float = hp(
        0.01,
        gt=0,
        help="server learning rate eta",
        source="Flower's FedYogi (FedAdam/FedAdagrad default 0.1 did not learn, see README)",
    )
    beta_1: float = hp(0.9, ge=0, lt=1, help="first-moment decay", source="Flower; Reddi et al. 2021")
    beta_2: float = hp(0.99, ge=0, lt=1, help="second-moment decay", source="Flower; Reddi et al. 2021")
    tau: float = hp(1e-3, gt=0, help="adaptivity tau (added to sqrt(v))", source="Flower; Reddi et al. 2021")


@dataclass
class FedAdagradParams(StrategyParams):
    eta: float = hp(0.01, gt=0, help="server learning rate eta", source="as fedadam")
    tau: float = hp(1e-3, gt=0, help="adaptivity tau (added to sqrt(v))", source="Flower; Reddi et al. 2021")


@dataclass
class FedTrimmedAvgParams(StrategyParams):
    beta: float = hp(
        0.2,
        ge=0,
        lt=0.5,
        help="share of the updates trimmed from each end, per coordinate (Flower's beta)",
        source="Flower's FedTrimmedAvg",
    )


class FedAvgMServer(ServerOptimizer, fs.FedAvgM):
    """Flower's FedAvgM (Hsu et al. 2019) on the trainable parameters, its momentum checkpointed."""

    state_attributes = fc.FEDAVGM_STATE


class FedAdamServer(ServerOptimizer, fs.FedAdam):
    """Flower's FedAdam (Reddi et al. 2021) on the trainable parameters, its moments checkpointed."""

    state_attributes = fc.FEDOPT_STATE


class FedYogiServer(ServerOptimizer, fs.FedYogi):
    """Flower's FedYogi (Reddi et al. 2021) on the trainable parameters, its moments checkpointed."""

    state_attributes = fc.FEDOPT_STATE


class FedAdagradServer(ServerOptimizer, fs.FedAdagrad):
    """Flower's FedAdagrad (Reddi et al. 2021) on the trainable parameters, its moments checkpointed."""

    state_attributes = fc.FEDOPT_STATE


class FedMedianServer(FlowerAggregation, fs.FedMedian):
    """Flower's FedMedian (Yin et al. 2018): the coordinate-wise median of the screened replies."""


class FedTrimmedAvgServer(FlowerAggregation, fs.FedTrimmedAvg):
    """Flower's FedTrimmedAvg (Yin et al. 2018): the coordinate-wise trimmed mean of the screened replies."""


REDDI = "Reddi et al. 2021, Adaptive Federated Optimization"


@register
class FedAvgM(Algorithm):
    name = "fedavgm"
    summary = "server momentum on the averaged update"
    paper = (
        "Hsu et al. 2019, Measuring the Effects of Non-Identical Data Distribution for Federated Visual Classification"
    )
    Params = FedAvgMParams

    def server(self, p):
        return FedAvgMServer(p, server_learning_rate=p.server_lr, server_momentum=p.server_momentum)


@register
class FedAdam(Algorithm):
    name = "fedadam"
    summary = "server-side Adam on the averaged update"
    paper = REDDI
    Params = FedOptParams

    def server(self, p):
        return FedAdamServer(p, eta=p.eta, beta_1=p.beta_1, beta_2=p.beta_2, tau=p.tau)


@register
class FedYogi(Algorithm):
    name = "fedyogi"
    summary = "server-side Yogi on the averaged update"
    paper = REDDI
    Params = FedOptParams

    def server(self, p):
        return FedYogiServer(p, eta=p.eta, beta_1=p.beta_1, beta_2=p.beta_2, tau=p.tau)


@register
class FedAdagrad(Algorithm):
    name = "fedadagrad"
    summary = "server-side Adagrad on the averaged update"
    paper = REDDI
    Params = FedAdagradParams

    def server(self, p):
        return FedAdagradServer(p, eta=p.eta, tau=p.tau)


@register
class FedMedian(Algorithm):
    name = "fedmedian"
    summary = "coordinate-wise median"
    paper = "Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    Server = FedMedianServer
    client_dp_refusal = DP_REFUSAL
    robust = True


@register
class FedTrimmedAvg(Algorithm):
    name = "fedtrimmedavg"
    summary = "coordinate-wise trimmed mean"
    paper = "Yin et al. 2018, Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    Params = FedTrimmedAvgParams
    client_dp_refusal = DP_REFUSAL
    robust = True

    def server(self, p):
        return FedTrimmedAvgServer(p, beta=p.beta)
