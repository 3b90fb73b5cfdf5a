"""Client selection (``selection.name``): plug-ins that choose a round's training cohort.

A selector is one file of this package (found on first use: no import line anywhere)
with a :class:`Selector` subclass decorated with :func:`register`; its ``Params``
subclasses :class:`SelectionParams` and declares its own keys with ``hp``.

The strategy (``strategies/strategy.py``) asks its selector for the cohort whenever no
extension draws it (client-level DP's Poisson cohort does, and refuses every selector
but ``uniform``): among the parties that may train this round (all of them, or those
the simulated clock finds online, ``fedsim/system/run.py``), ``m`` of them, with the
generator of (seed, "sample", "fit", round), so a run repeats and resumes exactly. What
a selector may read is a :class:`Pool`: the candidates, ``m``, that generator, the
parties' sizes, the server's :class:`SelectionHistory` of what each party last reported
(checkpointed), the clock's view of the parties (expected round durations, how long each
stays online) and, for a selector that asks for it, a probe: the loss of the current
global model on a list of parties' training data (a query round trip, its bytes counted).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedsim.util.params import hp
from fedsim.util.plugins import Plugin, Registry

__all__ = [
    "SELECTORS",
    "ClockView",
    "Pool",
    "SelectionHistory",
    "SelectionParams",
    "Selector",
    "get",
    "hp",
    "register",
    "uniform_draw",
]


@dataclass
class SelectionParams:
    """``selection.*`` of every selector: its name (``uniform``: today's draw, the default)."""

    name: str = "uniform"


@dataclass
class ClockView:
    """What the simulated clock knows of the parties when a round starts."""

    #: simulated seconds at the round's start
    start_s: float
    #: the party's expected round duration in simulated seconds (download, compute, upload)
    expected_s: Callable[[int], float]
    #: simulated time until which the party stays online from ``start_s`` (inf: always)
    online_until: Callable[[int], float]


@dataclass
class SelectionHistory:
    """What the server last heard from each party (kept only for selectors that read it;
    checkpointed, so a resume selects as the uninterrupted run does).

    ``loss``: the party's last reported loss (the global model's on its training data when
    the clients report it, else its local ``train_loss``); ``loss_rms``: sqrt of the mean
    squared per-sample loss of that pass (Oort's statistical utility); ``round``: the
    round it last trained in; ``count``: how often; ``duration_s``: its last simulated
    round duration."""

    loss: dict[int, float] = field(default_factory=dict)
    loss_rms: dict[int, float] = field(default_factory=dict)
    round: dict[int, int] = field(default_factory=dict)
    count: dict[int, int] = field(default_factory=dict)
    duration_s: dict[int, float] = field(default_factory=dict)

    def record(self, server_round: int, party: int, metrics: Mapping[str, Any]) -> None:
        """Note a party's reply of ``server_round`` (its reply metrics)."""
        loss = metrics.get("global_loss", metrics.get("train_loss"))
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            self.loss[party] = float(loss)
        rms = metrics.get("global_loss_rms")
        if isinstance(rms, (int, float)) and math.isfinite(rms):
            self.loss_rms[party] = float(rms)
        self.round[party] = int(server_round)
        self.count[party] = self.count.get(party, 0) + 1
        if "sim_total_s" in metrics:
            self.duration_s[party] = float(metrics["sim_total_s"])

    def to_state(self) -> dict[str, dict[str, float]]:
        """As a checkpoint entry (string keys, plain numbers)."""
        return {
            name: {str(k): v for k, v in getattr(self, name).items()}
            for name in ("loss", "loss_rms", "round", "count", "duration_s")
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Mapping[str, Any]]) -> SelectionHistory:
        out = cls()
        for name, kind in (("loss", float), ("loss_rms", float), ("round", int), ("count", int), ("duration_s", float)):
            setattr(out, name, {int(k): kind(v) for k, v in state.get(name, {}).items()})
        return out


@dataclass
class Pool:
    """What a selector chooses from (module docstring)."""

    round: int
    #: the sorted parties that may train this round
    parties: list[int]
    #: how many of them to choose
    m: int
    #: the round's generator: (seed, "sample", "fit", round)
    rng: np.random.Generator
    #: training samples of every party (index = party id)
    sizes: Sequence[int]
    history: SelectionHistory
    clock: ClockView | None = None
    #: the loss of the global model on these parties' training data (a query round trip)
    probe: Callable[[list[int]], dict[int, float]] | None = None


def uniform_draw(parties: Sequence[int], m: int, rng: np.random.Generator) -> list[int]:
    """``m`` of ``parties`` uniformly without replacement, sorted: fedsim's draw since its
    first version (so ``uniform`` keeps every run's cohort, and its model, byte for byte)."""
    if m >= len(parties):
        return list(parties)
    chosen = rng.choice(len(parties), size=m, replace=False)
    return sorted(parties[i] for i in chosen)


class Selector(Plugin):
    """One way of choosing the cohort (module docstring)."""

    Params: type = SelectionParams
    #: every party is equally likely: what client-level DP's accounting and the clock's
    #: unbiased over-selection assume (a biased selector is refused with client-level DP)
    unbiased: ClassVar[bool] = False
    #: reads the simulated clock (``system.source``): refused without one
    needs_clock: ClassVar[bool] = False
    #: keeps a :class:`SelectionHistory` of the parties' replies
    keeps_history: ClassVar[bool] = False
    #: asks the training parties to report the global model's loss on their data first
    asks_global_loss: ClassVar[bool] = False
    #: calls :attr:`Pool.probe` (the candidates evaluate the global model before the round)
    probes: ClassVar[bool] = False

    def select(self, params: Any, pool: Pool) -> list[int]:
        """The sorted cohort: ``pool.m`` of ``pool.parties``."""
        raise NotImplementedError

    def check(self, cfg: Any) -> str | None:
        if self.needs_clock and cfg.system.source == "none":
            return (
                f"selection.name {self.name} reads the simulated clock's durations and traces; "
                "set system.source (synthetic, fedscale or file)"
            )
        return None


#: the selectors: the modules of strategies/selection, uniform first
SELECTORS: Registry[Selector] = Registry(
    "client selector",
    "strategies.selection",
    section="selection",
    base=SelectionParams,
    ordered=True,
    first=("uniform", "powerofchoice", "oort", "available"),
)


def register(cls: type[Selector]) -> type[Selector]:
    """Class decorator: make a selector available to ``selection.name``."""
    return SELECTORS.register(cls)


def get(name: str) -> Selector:
    return SELECTORS.get(name)
