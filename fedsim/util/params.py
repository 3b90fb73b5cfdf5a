"""A plug-in's own parameters: one dataclass per plug-in, each field declared with :func:`hp`.

pfl-research's pattern, for every kind of plug-in (algorithms, attacks, defences, data
sets, models, partition schemes, trackers, engines, privacy modes): a parameter lives
beside the code that reads it, with its default (the paper's, the library's), the range
it may take, a one-line meaning and where the default comes from. A config's
``<section>.<key>`` is checked against the chosen plug-in's dataclass, so validation,
listings and README tables all come from these declarations.

    @dataclass
    class FedProxParams(StrategyParams):
        mu: float = hp(0.01, ge=0, help="proximal weight mu", source="NIID-Bench (Li et al. 2022)")

A parameter whose default is None takes an automatic value (a paper's formula, the
cohort's size) and admits null besides its range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HpInfo:
    """What :func:`hp` records about one parameter."""

    help: str
    source: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    #: the allowed values in words, where a range cannot say it ("a list of party ids")
    text: str | None = None

    def allowed(self) -> str:
        """The allowed values in interval notation: ``[0, 1)``, ``> 0``, ``a, b``."""
        if self.text is not None:
            return self.text
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
    text: str | None = None,
) -> Any:
    """A parameter field: its default, allowed range, meaning and the default's source.
    A mutable default (a list, a dict) is copied for every instance."""
    info = HpInfo(help, source, ge, gt, le, lt, tuple(choices) if choices is not None else None, text)
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"hp": info})
    return field(default=default, metadata={"hp": info})


@dataclass(frozen=True)
class HpField:
    """One declared parameter of a plug-in, for listings and validation."""

    name: str
    type: str
    default: Any
    info: HpInfo

    def allowed(self) -> str:
        """The allowed values, with null where the default is None (an automatic value)."""
        if self.type == "bool" and self.info.choices is None and self.info.text is None:
            return "true, false"
        return self.info.allowed() + (" or null" if self.default is None and self.info.text is None else "")


def field_default(f: dataclasses.Field) -> Any:
    """The default of a dataclass field (its factory's value for a list or a dict)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def hyperparameters(params_cls: type) -> list[HpField]:
    """The parameters a params class declares with :func:`hp`, in field order (fields
    without a declaration, such as ``name`` or a section's common keys, are left out)."""
    out = []
    for f in dataclasses.fields(params_cls):
        info = f.metadata.get("hp")
        if info is None:
            continue
        ftype = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append(HpField(f.name, ftype, field_default(f), info))
    return out


def undeclared(params_cls: type, base: type | None) -> list[str]:
    """The fields of ``params_cls`` that are neither declared with :func:`hp` nor fields
    of ``base`` (the keys every plug-in of the kind shares): a plug-in must declare its own."""
    common = {f.name for f in dataclasses.fields(base)} if base is not None else set()
    return [f.name for f in dataclasses.fields(params_cls) if "hp" not in f.metadata and f.name not in common]


def fmt(value: Any) -> str:
    """A default as listings show it: ``0.01``, ``null``, ``[200, 200]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def out_of_range(params: Any, section: str, kind: str, plugin: str, not_a_choice: str = "is not allowed") -> str | None:
    """The first declared parameter of ``params`` outside its allowed values, as an error
    naming the config key ``<section>.<name>``, the plug-in and what is allowed; None if
    all fit. None is allowed where the default is None. ``not_a_choice``: the words for
    a value outside ``choices`` (algorithms, attacks and defences have always said
    "is out of range" for both)."""
    for hf in hyperparameters(type(params)):
        value = getattr(params, hf.name)
        if value is None and hf.default is None:
            continue
        if value is not None and hf.info.admits(value):
            continue
        what = not_a_choice if hf.info.choices is not None else "is out of range"
        return f"config key '{section}.{hf.name}' = {value!r} {what} for {kind} '{plugin}'; allowed: {hf.allowed()}"
    return None
