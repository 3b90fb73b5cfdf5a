"""Flower's own server strategies, selectable by name, with the plain local trainer.

=============== ==================================================== =======================================
name            Flower class (paper)                                 fedsim keys
=============== ==================================================== =======================================
fedavgm         FedAvgM (Hsu et al. 2019)                            strategy.server_lr, .server_momentum
fedadam         FedAdam (Reddi et al. 2021, "Adaptive Fed. Opt.")    strategy.eta, .eta_l, .beta_1, .beta_2, .tau
fedyogi         FedYogi (Reddi et al. 2021)                          strategy.eta, .eta_l, .beta_1, .beta_2, .tau
fedadagrad      FedAdagrad (Reddi et al. 2021)                       strategy.eta, .eta_l, .tau
fedmedian       FedMedian (Yin et al. 2018)                          -
fedtrimmedavg   FedTrimmedAvg (Yin et al. 2018)                      strategy.beta (trimmed share per side)
krum            Krum (Blanchard et al. 2017)                         strategy.num_malicious
=============== ==================================================== =======================================

Each is ``FedsimStrategy`` mixed into the Flower class, so Flower's aggregation runs
unchanged; its server state (momentum, moments) is checkpointed.
"""

from __future__ import annotations

from typing import Any, Callable

from flwr.serverapp import strategy as fs

from .base import ClientRule, FedsimStrategy
from .fedavg import flower_kwargs
from .registry import StrategySpec, register


def _mix(flower_cls: type, state: tuple[str, ...]) -> type:
    return type(flower_cls.__name__, (FedsimStrategy, flower_cls), {"state_attributes": state, "__doc__": flower_cls.__doc__, "__module__": __name__})


FedAvgM = _mix(fs.FedAvgM, ("current_arrays", "momentum_vector"))
FedAdam = _mix(fs.FedAdam, ("current_arrays", "m_t", "v_t"))
FedYogi = _mix(fs.FedYogi, ("current_arrays", "m_t", "v_t"))
FedAdagrad = _mix(fs.FedAdagrad, ("current_arrays", "m_t", "v_t"))
FedMedian = _mix(fs.FedMedian, ())
FedTrimmedAvg = _mix(fs.FedTrimmedAvg, ())
Krum = _mix(fs.Krum, ())


def _opt(cfg: Any) -> dict[str, Any]:
    s = cfg.strategy
    return {"eta": s.eta, "eta_l": s.eta_l, "beta_1": s.beta_1, "beta_2": s.beta_2, "tau": s.tau}


BUILTINS: list[tuple[str, type, Callable[[Any], dict[str, Any]], str]] = [
    ("fedavgm", FedAvgM, lambda c: {"server_learning_rate": c.strategy.server_lr, "server_momentum": c.strategy.server_momentum}, "server momentum"),
    ("fedadam", FedAdam, _opt, "server-side Adam"),
    ("fedyogi", FedYogi, _opt, "server-side Yogi"),
    ("fedadagrad", FedAdagrad, lambda c: {"eta": c.strategy.eta, "eta_l": c.strategy.eta_l, "tau": c.strategy.tau}, "server-side Adagrad"),
    ("fedmedian", FedMedian, lambda c: {}, "coordinate-wise median"),
    ("fedtrimmedavg", FedTrimmedAvg, lambda c: {"beta": c.strategy.beta}, "coordinate-wise trimmed mean"),
    ("krum", Krum, lambda c: {"num_malicious_nodes": c.strategy.num_malicious}, "Krum selection"),
]

for _name, _cls, _kw, _summary in BUILTINS:
    register(StrategySpec(_name, (lambda cls, kw: lambda cfg: cls(**kw(cfg), **flower_kwargs(cfg)))(_cls, _kw), ClientRule, summary=_summary))
