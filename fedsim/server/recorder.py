"""A run's records, round by round: the strategy's ``after_round`` hook.

The :class:`Recorder` runs the round callbacks (:mod:`fedsim.server.callbacks`: privacy's
ledger, the row's parts, the divergence check, the evaluations, the files, the
checkpoint, the trackers, the caller's progress bar) in the order
:func:`~fedsim.server.callbacks.round_callbacks` states, and hands them the run's
other moments: an aborted round, the end of the round loop, the summary.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from fedsim.server.callbacks import RoundCallback, RoundRecord, RunProgress
from strategies.strategy import RoundLog


class Recorder:
    """The strategy's ``after_round`` hook: the round callbacks, in their order."""

    def __init__(self, run: RunProgress, callbacks: Sequence[RoundCallback]) -> None:
        self.run = run
        self.callbacks = tuple(callbacks)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.run.history

    @property
    def diverged(self) -> dict[str, Any] | None:
        """The run's first divergence ({"round", "reason"}), or None."""
        return self.run.diverged

    @property
    def last_state(self) -> OrderedDict[str, torch.Tensor] | None:
        """The last accepted global model."""
        return self.run.last_state

    def wall_time(self) -> float:
        return self.run.wall_time()

    def __call__(self, rl: RoundLog, forced_reason: str | None = None) -> bool:
        """Record round ``rl``; True when the run must stop after it (it diverged with
        ``on_divergence: stop``, or its privacy budget is spent). ``forced_reason``: the
        round's model was refused (non-finite) and the round counts as diverged."""
        state = rl.agg_state if forced_reason is None else None
        if state is not None:
            self.run.last_state = state
        rec = RoundRecord(rl, {"round": rl.round}, state, forced_reason)
        for callback in self.callbacks:
            callback.on_round(rec)
        return rec.stop or rec.last

    def record_failed_round(self, rl: RoundLog) -> None:
        """An aborted round's failure reasons, before the run stops (a resume drops them)."""
        for callback in self.callbacks:
            callback.on_abort(rl)

    def close(self) -> None:
        """Called in the server's ``finally``: the callbacks learn whether an exception
        (aborted, interrupted, a pruned trial) stopped the round loop. A callback's own
        error there (the checkpoint writer's: a full disk) is what stopped the run for
        the callbacks after it, and is raised once they all closed."""
        exc = sys.exc_info()[1]
        failed: BaseException | None = None
        for callback in self.callbacks:
            try:
                callback.on_close(exc)
            except BaseException as error:  # the checkpoint writer's (a full disk): it stops the run
                failed = failed or error
                exc = error  # the callbacks after it learn the run failed (trackers: "failed")
        if failed is not None:
            raise failed

    def finish(self, summary: dict[str, Any]) -> None:
        """The run's summary (after summary.json and the plots), to the callbacks."""
        for callback in self.callbacks:
            callback.on_finish(summary)
