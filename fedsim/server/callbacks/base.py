"""What the round callbacks share: the run's progress, one round's record, the callback.

A :class:`RoundCallback` takes one part of a round's records (an evaluation, the
divergence check, the files, the checkpoint, the trackers); the
:class:`~fedsim.server.recorder.Recorder` runs them in the one order
:func:`fedsim.server.callbacks.round_callbacks` states, each on the same
:class:`RoundRecord`: what a callback adds to the row or decides (the round is
evaluated, it diverged, the run stops) is there for those after it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from strategies.strategy import RoundLog


@dataclass
class RunProgress:
    """The run so far, shared by the callbacks across rounds."""

    #: the ``metrics.jsonl`` rows written so far (a resume's from its checkpoint)
    history: list[dict[str, Any]]
    #: seconds the run had taken before this process's clock (a resume's, and preparation)
    wall_offset: float
    #: the last accepted global model
    last_state: OrderedDict[str, torch.Tensor] | None = None
    #: the first divergence of the run: {"round", "reason"} (a resumed run's from its history)
    diverged: dict[str, Any] | None = None
    t_start: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        if self.diverged is None:
            self.diverged = next(
                ({"round": r["round"], "reason": r["diverged"]} for r in self.history if r.get("diverged")), None
            )

    def wall_time(self) -> float:
        """Seconds the run has taken, over all its starts."""
        return self.wall_offset + time.perf_counter() - self.t_start


@dataclass
class RoundRecord:
    """One round on its way to the records."""

    log: RoundLog
    #: the ``metrics.jsonl`` row, built by the callbacks in their order (its keys' order is theirs)
    row: dict[str, Any]
    #: the round's accepted global model; None when the round's model was refused
    state: OrderedDict[str, torch.Tensor] | None
    #: why the round is counted as diverged whatever its numbers say (a non-finite aggregate)
    forced_reason: str | None = None
    #: the run ends after this round although ``federation.rounds`` is not reached (the
    #: privacy budget): its model is evaluated and checkpointed like a final round's
    last: bool = False
    #: why the round counts as diverged, or None
    reason: str | None = None
    #: the run must stop after this round (it diverged, ``on_divergence: stop``)
    stop: bool = False
    #: the global model was evaluated on the test set this round
    evaluated: bool = False
    #: ``parties.jsonl`` rows of the per-party evaluation; None when it did not run
    party_rows: list[dict[str, Any]] | None = None

    def due(self, every: int, rounds: int) -> bool:
        """Whether a step done every ``every`` rounds is due: the model was accepted and
        this is one of every ``every`` rounds, the run's last, or the last before a stop."""
        r = self.log.round
        return self.state is not None and every > 0 and (r % every == 0 or r == rounds or self.stop or self.last)


class RoundCallback:
    """One part of the records of each round. Every hook does nothing by default."""

    def on_round(self, rec: RoundRecord) -> None:
        """A round is complete: add to ``rec.row``, decide, write."""

    def on_abort(self, rl: RoundLog) -> None:
        """The run stops in round ``rl`` without aggregating it (too many failures)."""

    def on_close(self, exc: BaseException | None) -> None:
        """The round loop ended; ``exc`` is what stopped it (None: it ended normally)."""

    def on_finish(self, summary: dict[str, Any]) -> None:
        """``summary.json`` and the plots are written."""
