"""Attacks on federated learning: one file per attack, holding its parameters and what
it poisons (the malicious parties' replies at the server, their training data, or
both) and how its success is measured.

An attack's file registers itself (``@register`` on an :class:`Attack` subclass); the
registry imports every module of this package on first use, so adding an attack is
adding its file. ``attacks`` reads only ``strategies`` (the replies, the update space)
and ``fedsim.util.seeding``, never fedsim's engine; fedsim's server and clients reach the
attacks through this registry (``fedsim/inputs/adversary.py``). Defences are server rules in
``strategies/`` (``strategies.defences``).
"""

from __future__ import annotations

from typing import Any

from strategies import defences
from strategies.params import hyperparameters

from .params import AttackParams, MaliciousParams, allowed_text, out_of_range
from .registry import (
    Attack,
    DataInfo,
    Predict,
    ReplyAttack,
    available,
    get,
    malicious_count,
    malicious_parties,
    register,
    unregister,
)
from .rule import AttackRule

__all__ = [
    "Attack",
    "AttackParams",
    "AttackRule",
    "DataInfo",
    "MaliciousParams",
    "Predict",
    "ReplyAttack",
    "allowed_text",
    "available",
    "build_rule",
    "get",
    "malicious_count",
    "malicious_parties",
    "out_of_range",
    "register",
    "table_markdown",
    "unregister",
]


def build_rule(params: AttackParams, n_parties: int, seed: int) -> AttackRule | None:
    """The server rule of ``params`` (its model poisoning), or None when it poisons no reply."""
    attack = get(params.name)
    if not attack.poisons_replies(params):
        return None
    return AttackRule(attack, params, malicious_parties(params, n_parties, seed), seed)


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    return f"{value:g}" if isinstance(value, float) else str(value)


def table_markdown() -> str:
    """The README's table of attacks and defences with their parameters and defaults."""
    lines = ["| `attack.name` | what it does | `attack.*` (default, allowed) | paper |", "| --- | --- | --- | --- |"]
    for name in available():
        attack = get(name)
        params = "; ".join(
            f"`{h.name}` ({_fmt(h.default)}, {allowed_text(attack.Params, h.name)})"
            for h in hyperparameters(attack.Params)  # type: ignore[arg-type]
        )
        lines.append(f"| `{name}` | {attack.summary} | {params or '-'} | {attack.paper or '-'} |")
    lines += [
        "",
        "| `defence.name` | what it does | `defence.*` (default, allowed) | paper |",
        "| --- | --- | --- | --- |",
    ]
    for name in defences.available():
        d = defences.get(name)
        params = "; ".join(
            f"`{h.name}` ({_fmt(h.default)}, {h.info.allowed()}{' or null' if h.default is None else ''})"
            for h in hyperparameters(d.Params)  # type: ignore[arg-type]
        )
        lines.append(f"| `{name}` | {d.summary} | {params or '-'} | {d.paper or '-'} |")
    return "\n".join(lines) + "\n"
