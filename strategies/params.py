"""An algorithm's hyperparameters: one dataclass per algorithm, each field declared with :func:`hp`.

The declaration helpers are fedsim's one plug-in mechanism's (:mod:`fedsim.util.params`),
re-exported here for algorithm files. ``strategy.<key>`` of a config is checked against
the chosen algorithm's dataclass only: a key the algorithm does not have is an error,
so no algorithm reads another's field by accident.

    @dataclass
    class FedProxParams(StrategyParams):
        mu: float = hp(0.01, ge=0, help="proximal weight mu", source="NIID-Bench (Li et al. 2022)")
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.util import params as _params
from fedsim.util.params import HpField, HpInfo, hp, hyperparameters

__all__ = ["HpField", "HpInfo", "StrategyParams", "hp", "hyperparameters", "out_of_range"]


@dataclass
class StrategyParams:
    """``strategy.*`` of a config: the algorithm's name, then its own hyperparameters.

    Subclasses add fields declared with :func:`hp`; an algorithm without
    hyperparameters uses this class as it is.
    """

    name: str = "fedavg"


def out_of_range(params: StrategyParams) -> str | None:
    """The first hyperparameter outside its allowed range, as an error text; None if all fit."""
    return _params.out_of_range(params, "strategy", "strategy", params.name, "is out of range")
