"""An attack's parameters: one dataclass per attack, each field declared with
:func:`fedsim.util.params.hp` (its default, allowed range, meaning and source).

``attack.<key>`` of a config is checked against the chosen attack's dataclass only, as
``strategy.*`` is against the algorithm's: a key the attack does not have is an error.
Every attack but ``none`` has the malicious parties' share (``fraction``) or their ids
(``parties``); a parameter whose default is None takes an automatic value (the paper's
formula, the cohort's size) and admits null.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.util import params as _params
from fedsim.util.params import hp, hyperparameters


@dataclass
class AttackParams:
    """``attack.*`` of a config: the attack's name, then its own parameters."""

    name: str = "none"


@dataclass
class MaliciousParams(AttackParams):
    """The parameters every attack has: which parties are malicious."""

    fraction: float = hp(
        0.2,
        ge=0,
        le=1,
        help="share of the parties that are malicious: floor(fraction x n_parties), at least 1 when > 0, drawn from the seed",
        source="Fang et al. 2020's default of 20% malicious clients",
    )
    # checked against the number of parties (fedsim.config.validate)
    parties: list[int] | None = hp(
        None,
        help="the malicious parties by id, instead of a drawn fraction",
        source="null: the parties are drawn (attack.fraction)",
        text="a list of party ids",
    )


def allowed_text(params_cls: type[AttackParams], name: str) -> str:
    """The allowed values of a parameter as the listings show them."""
    return next(h for h in hyperparameters(params_cls) if h.name == name).allowed()


def out_of_range(params: AttackParams) -> str | None:
    """The first parameter outside its allowed range, as an error text; None if all fit."""
    return _params.out_of_range(params, "attack", "attack", params.name, "is out of range")
