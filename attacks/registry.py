"""The attack registry: a name -> an :class:`Attack` (its parameters, what it poisons,
how its success is measured).

Every module of the ``attacks`` package is imported the first time the registry is
read, so an attack's file registers itself with ``@register`` (as algorithms do in
``strategies``). An attack poisons in one or more of three places:

* **replies** (model poisoning): :meth:`Attack.poison_replies` replaces the malicious
  parties' replies at the server, after screening and before any defence and the
  algorithm's aggregate. The server is where a simulation knows the cohort's honest
  updates, which ALIE and IPM assume the colluding attackers know (an omniscient
  attacker, as in Baruch et al. 2019 and Xie et al. 2020); the malicious parties train
  honestly first, so sign-flip and scale start from their own update.
* **data** (data poisoning): :meth:`Attack.poison_data` changes the malicious parties'
  training samples (labels, trigger pixels) once per process; every engine then trains
  on them, the batched one included.
* **success**: :meth:`Attack.success_rate` measures the attack on the test set
  (``attack_success_rate`` in ``metrics.jsonl`` and ``summary.json``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from fedsim.util.plugins import Plugin, Registry
from fedsim.util.seeding import derive
from strategies.cohort import malicious_count
from strategies.replies import UpdateSpace
from strategies.strategy import ClientOutcome

from .params import AttackParams, MaliciousParams

#: predict(x) -> predicted labels, for a batch of raw test inputs (uint8 images)
Predict = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ReplyAttack:
    """What model poisoning sees of a round: the cohort's replies split into honest and
    malicious ones, and their updates d_k = w_k - w (``space``)."""

    server_round: int
    seed: int
    space: UpdateSpace
    honest: list[ClientOutcome]
    malicious: list[ClientOutcome]

    @property
    def cohort(self) -> int:
        """n: the replies of the round, honest and malicious."""
        return len(self.honest) + len(self.malicious)

    def honest_updates(self) -> torch.Tensor:
        """The honest updates (K, P); with no honest reply in the cohort, the malicious
        parties' own honestly trained updates stand in."""
        return self.space.matrix(self.honest or self.malicious)


@dataclass
class DataInfo:
    """What an attack may check about the data set before a run."""

    dataset: str
    num_classes: int
    is_image: bool
    input_shape: tuple[int, ...]


class Attack(Plugin):
    """One attack. Subclass it in the attack's file and decorate it with :func:`register`."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type[AttackParams]] = MaliciousParams
    #: changes the malicious parties' training data (poison_data)
    poisons_data: ClassVar[bool] = False

    def poisons_replies(self, params: AttackParams) -> bool:
        """Whether :meth:`poison_replies` changes anything with these parameters."""
        return False

    def poison_replies(self, params: AttackParams, ctx: ReplyAttack) -> None:
        """Replace the malicious replies (``ctx.space.replace(outcome, update)``)."""

    def poison_data(
        self,
        params: AttackParams,
        x: torch.Tensor,
        y: torch.Tensor,
        owned: Mapping[int, torch.Tensor],
        seed: int,
        num_classes: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set with the malicious parties' samples (``owned``: party ->
        its indices) poisoned; new tensors, never the inputs changed in place."""
        return x, y

    def success_rate(
        self, params: AttackParams, predict: Predict, x_test: torch.Tensor, y_test: torch.Tensor, num_classes: int
    ) -> float | None:
        """The attack's success on the test set, or None when it has no target."""
        return None

    def check(self, cfg: Any) -> str | None:
        """Why ``cfg`` (fedsim's ExperimentConfig) cannot run this attack, or None."""
        return None

    def check_data(self, params: AttackParams, data: DataInfo) -> str | None:
        """Why this data set cannot be attacked so (a class id out of range), or None."""
        return None


ATTACKS: Registry[Attack] = Registry("attack", __package__, section="attack", base=AttackParams)
#: class decorator: register an :class:`Attack` subclass under its ``name``
register = ATTACKS.register
unregister = ATTACKS.unregister
available = ATTACKS.available
get = ATTACKS.get


def malicious_parties(params: AttackParams, n_parties: int, seed: int) -> list[int]:
    """The sorted ids of the malicious parties: ``attack.parties``, or
    :func:`malicious_count` of them drawn from (seed, "malicious"); none for ``none``."""
    if not isinstance(params, MaliciousParams):
        return []
    if params.parties is not None:
        return sorted(int(p) for p in params.parties)
    k = malicious_count(params.fraction, n_parties)
    rng = np.random.default_rng(derive(seed, "malicious"))
    return sorted(int(p) for p in rng.choice(n_parties, size=k, replace=False))


@register
class NoAttack(Attack):
    name = "none"
    summary = "every party is honest"
    paper = "-"
    Params = AttackParams
