"""TensorBoard: an event stream per run in ``RUN_DIR/tensorboard`` (every ``metrics.jsonl``
scalar with ``step=round``).

A resumed run opens the stream with ``purge_step`` at its checkpoint's last round, so
TensorBoard hides what the killed process wrote after it, and writes that round again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedsim.trackers.base import TrackedRun, Tracker, register, round_metrics


@register
class TensorboardTracker(Tracker):
    name = "tensorboard"
    summary = "an event stream per run in RUN_DIR/tensorboard (the same as output.tensorboard: true)"
    paper = "TensorBoard; pip install 'fedsim[tensorboard]'"
    extra = "tensorboard"
    module = "tensorboard"

    def start(self, run: TrackedRun) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        last = run.history[-1]["round"] if run.history else None
        self.writer = SummaryWriter(log_dir=str(run.run_dir / "tensorboard"), purge_step=last)
        if run.history:
            self.log_round(run.history[-1])
        return {"dir": str(run.run_dir / "tensorboard")}

    def log_round(self, row: Mapping[str, Any]) -> None:
        if row.get("aborted"):
            return
        for key, value in round_metrics(row).items():
            self.writer.add_scalar(key, value, int(row["round"]))
        self.writer.flush()

    def finish(self, summary: Mapping[str, Any], files: Iterable[Path]) -> None:
        # the run's status beside its curves: a diverged run's curves just stop, which says nothing of why
        status = str(summary.get("status") or "finished")
        if summary.get("diverged_round") is not None:
            status += f" in round {summary['diverged_round']}: {summary.get('divergence_reason')}"
        self.writer.add_text("fedsim/status", status, int(summary.get("rounds") or 0))
        self.writer.close()

    def end(self, status: str) -> None:
        self.writer.close()
