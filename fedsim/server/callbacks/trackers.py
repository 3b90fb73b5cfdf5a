"""The run's experiment trackers (MLflow, W&B, TensorBoard: :mod:`fedsim.trackers`): each
round's row as it is written, the summary and files at the end, and a run stopped by an
exception ended as failed or killed. A tracker's failure is never the run's."""

from __future__ import annotations

from typing import Any

from fedsim.server.callbacks.base import RoundCallback, RoundRecord
from fedsim.trackers import RunTrackers


class Trackers(RoundCallback):
    def __init__(self, trackers: RunTrackers) -> None:
        self.trackers = trackers

    def on_round(self, rec: RoundRecord) -> None:
        self.trackers.log_round(rec.row)

    def on_close(self, exc: BaseException | None) -> None:
        if exc is not None:  # aborted, interrupted, a pruned trial
            status = getattr(exc, "tracker_status", None) or (
                "killed" if isinstance(exc, KeyboardInterrupt) else "failed"
            )
            self.trackers.end(status)

    def on_finish(self, summary: dict[str, Any]) -> None:
        self.trackers.finish(summary)
