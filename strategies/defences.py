"""The defence registry: ``defence.name`` -> a :class:`Defence`, a server rule on the
replies that composes with the chosen algorithm.

A defence is one file in ``strategies/`` (discovered with the algorithms): a params
dataclass (``defence.*`` of a config, declared with :func:`strategies.params.hp`), the
:class:`~strategies.replies.ReplyRule` it builds, and ``check(cfg)`` for the
algorithms it cannot run with. The rule runs on the screened replies before the
algorithm's ``aggregate`` (after an attack's model poisoning), so norm bounding before
FedAvg, FedProx or the median is one config: ``strategy.name`` and ``defence.name``.

Robust aggregators that *replace* the average (Krum, Multi-Krum, Bulyan, the median,
the trimmed mean) are algorithms (``strategy.name``), not defences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fedsim.util import params as _params
from fedsim.util.plugins import Plugin, Registry

from .replies import ReplyRule


@dataclass
class DefenceParams:
    """``defence.*`` of a config: the defence's name, then its own parameters."""

    name: str = "none"


class Defence(Plugin):
    """One defence. Subclass it in the defence's file and decorate it with :func:`register`."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type[DefenceParams]] = DefenceParams

    def rule(self, params: DefenceParams) -> ReplyRule | None:
        """The server rule for these parameters (None: no rule)."""
        return None

    def check(self, cfg: Any) -> str | None:
        """Why ``cfg`` (fedsim's ExperimentConfig) cannot run this defence, or None."""
        return None


# the defences are files of the strategies package, discovered with the algorithms
DEFENCES: Registry[Defence] = Registry("defence", __package__, section="defence", base=DefenceParams)
#: class decorator: register a :class:`Defence` subclass under its ``name``
register = DEFENCES.register
unregister = DEFENCES.unregister
available = DEFENCES.available
get = DEFENCES.get


def out_of_range(params: DefenceParams) -> str | None:
    """The first parameter outside its allowed range, as an error text; None if all fit.
    A parameter whose default is None (an automatic value) also admits None."""
    return _params.out_of_range(params, "defence", "defence", params.name, "is out of range")


def build_rule(params: DefenceParams) -> ReplyRule | None:
    """The rule of ``params.name`` with these parameters (None for ``none``)."""
    rule = get(params.name).rule(params)
    if rule is not None:
        rule.key = "defence"
    return rule


@register
class NoDefence(Defence):
    name = "none"
    summary = "no rule: the algorithm aggregates the replies as they come"
    paper = "-"


__all__ = [
    "Defence",
    "DefenceParams",
    "available",
    "build_rule",
    "get",
    "out_of_range",
    "register",
    "unregister",
]
