"""``comm.budget_mb``: the run's bytes against its byte budget.

After the training part of the row (which holds the run's bytes so far,
``bytes_up_total`` and ``bytes_down_total``), their sum is ``bytes_total`` in the row; when the next round, estimated as
this round's bytes again, would take the total past ``comm.budget_mb`` (10^6 bytes a
MB), this round is the run's last (``comm_stop``, status ``budget``), evaluated and
checkpointed like a final one, as ``privacy.target_epsilon`` stops a run. A resume
with a larger budget goes on.
"""

from __future__ import annotations

from typing import Any

from fedsim.server.callbacks.base import RoundCallback, RoundRecord

MB = 1e6


def round_bytes(row: dict) -> int:
    return int(row.get("bytes_up", 0)) + int(row.get("bytes_down", 0))


def budget_stop(total: int, last_round: int, budget_mb: float) -> str | None:
    """Why the next round must not run (``total`` bytes so far, ``last_round`` the last
    round's bytes, the estimate of the next), or None."""
    if total + last_round <= budget_mb * MB:
        return None
    return (
        f"the next round would send {(total + last_round) / MB:.4g} MB in all > comm.budget_mb {budget_mb:g} "
        f"({total / MB:.4g} MB sent)"
    )


class ByteBudget(RoundCallback):
    def __init__(self, budget_mb: float) -> None:
        self.budget_mb = budget_mb

    def on_round(self, rec: RoundRecord) -> None:
        this, total = round_bytes(rec.row), rec.row["bytes_up_total"] + rec.row["bytes_down_total"]
        rec.row["bytes_total"] = total
        why = budget_stop(total, this, self.budget_mb)
        if why is not None and not rec.last:
            rec.row["comm_stop"] = why
            rec.last = True


def byte_budget_spent(cfg: Any, history: list[dict]) -> bool:
    """Whether a run with these rows may not run another round under ``cfg``'s budget."""
    if cfg.comm.budget_mb is None or not history:
        return False
    total = sum(round_bytes(r) for r in history)
    return budget_stop(total, round_bytes(history[-1]), cfg.comm.budget_mb) is not None
