"""An algorithm's hyperparameters: one dataclass per algorithm, each field declared with :func:`hp`.

pfl-research's pattern: the hyperparameters live beside the algorithm, with their
default (the paper's or Flower's), the range they may take, a one-line meaning and
where the default comes from. ``strategy.<key>`` of a config is checked against the
chosen algorithm's dataclass only: a key the algorithm does not have is an error, so
no algorithm reads another's field by accident.

    @dataclass
    class FedProxParams(StrategyParams):
        mu: float = hp(0.01, ge=0, help="proximal weight mu", source="NIID-Bench (Li et al. 2022)")
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HpInfo:
    """What :func:`hp` records about one hyperparameter."""

    help: str
    source: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None

    def allowed(self) -> str:
        """The allowed values in interval notation: ``[0, 1)``, ``> 0``, ``a, b``."""
        if self.choices is not None:
            return ", ".join(str(c) for c in self.choices)
        lo = self.ge if self.ge is not None else self.gt
        hi = self.le if self.le is not None else self.lt
        if lo is None and hi is None:
            return "any"
        if hi is None:
            return f"{'>=' if self.ge is not None else '>'} {lo:g}"
        if lo is None:
            return f"{'<=' if self.le is not None else '<'} {hi:g}"
        left = "[" if self.ge is not None else "("
        right = "]" if self.le is not None else ")"
        return f"{left}{lo:g}, {hi:g}{right}"

    def admits(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )


def hp(
    default: Any,
    *,
    help: str,
    source: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A hyperparameter field: its default, allowed range, meaning and the default's source."""
    info = HpInfo(help, source, ge, gt, le, lt, tuple(choices) if choices is not None else None)
    return field(default=default, metadata={"hp": info})


@dataclass
class StrategyParams:
    """``strategy.*`` of a config: the algorithm's name, then its own hyperparameters.

    Subclasses add fields declared with :func:`hp`; an algorithm without
    hyperparameters uses this class as it is.
    """

    name: str = "fedavg"


@dataclass(frozen=True)
class HpField:
    """One hyperparameter of an algorithm, for listings and validation."""

    name: str
    type: str
    default: Any
    info: HpInfo


def hyperparameters(params_cls: type[StrategyParams]) -> list[HpField]:
    """The declared hyperparameters of a params class, in declaration order (``name`` left out)."""
    out = []
    for f in dataclasses.fields(params_cls):
        if f.name == "name":
            continue
        info = f.metadata.get("hp")
        if info is None:
            raise TypeError(f"{params_cls.__name__}.{f.name} is not declared with strategies.params.hp(...)")
        ftype = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append(HpField(f.name, ftype, f.default, info))
    return out


def out_of_range(params: StrategyParams) -> str | None:
    """The first hyperparameter outside its allowed range, as an error text; None if all fit."""
    for hf in hyperparameters(type(params)):
        value = getattr(params, hf.name)
        if not hf.info.admits(value):
            return f"config key 'strategy.{hf.name}' = {value!r} is out of range for strategy '{params.name}'; allowed: {hf.info.allowed()}"
    return None
