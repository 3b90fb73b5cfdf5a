"""Divergence (README "Reliability"): a round whose training or test numbers blew up.

Checked twice in a round's records: before the evaluation, on the training replies (a
majority of non-finite replies, a non-finite or exploding training loss), which
decides whether the run stops (``federation.on_divergence: stop``: the final model is
then evaluated and checkpointed); and after it, on the test loss when the model was
evaluated. The second check writes ``diverged`` into the row and, for the run's first
divergence, one warning.
"""

from __future__ import annotations

import logging
import math

from fedsim.schema.experiment import ExperimentConfig
from fedsim.server.callbacks.base import RoundCallback, RoundRecord, RunProgress
from strategies.strategy import RoundLog

log = logging.getLogger(__name__)


def nonfinite_failures(rl: RoundLog) -> int:
    """Clients of the round whose reply was non-finite by training, not by an injected fault."""
    return sum(
        1
        for f in rl.failures
        if f.stage == "train" and f.reason.startswith("non-finite") and "(injected)" not in f.reason
    )


def nonfinite_majority(rl: RoundLog) -> str | None:
    """Why the round diverged when most of its cohort returned non-finite weights or loss, or None."""
    bad = nonfinite_failures(rl)
    if rl.sampled and 2 * bad > len(rl.sampled):
        return f"{bad} of {len(rl.sampled)} clients returned non-finite weights or loss"
    return None


def exploded(value: float | None, first: float | None, factor: float) -> bool:
    """``value`` is above ``factor`` times its first value (a positive one; factor 0: never)."""
    return factor > 0 and value is not None and first is not None and first > 0 and value > factor * first


class DivergenceCheck(RoundCallback):
    """The check before the evaluation (``after_evaluation=False``) or after it."""

    def __init__(self, cfg: ExperimentConfig, run: RunProgress, run_name: str, after_evaluation: bool) -> None:
        self.cfg, self.run, self.run_name, self.after_evaluation = cfg, run, run_name, after_evaluation

    def reason(self, row: dict, rl: RoundLog) -> str | None:
        """Why this round counts as diverged, or None."""
        majority = nonfinite_majority(rl)
        if majority is not None:
            return majority
        history, factor = self.run.history, self.cfg.federation.divergence_factor
        loss = row.get("train_loss")
        ref = next((r["train_loss"] for r in history if r.get("train_loss") is not None), None)
        if loss is not None and not math.isfinite(loss):
            return f"the mean training loss is {loss}"
        if exploded(loss, ref, factor):
            first_round = history[0]["round"] if history else 1
            return f"the mean training loss {loss:.3g} is above {factor:g} x round {first_round}'s {ref:.3g}"
        test_loss = row.get("test_loss")
        if test_loss is not None and not math.isfinite(test_loss):
            return f"the test loss is {test_loss}"
        first_test = next((r["test_loss"] for r in history if r.get("test_loss") is not None), None)
        if exploded(test_loss, first_test, factor):
            return f"the test loss {test_loss:.3g} is above {factor:g} x its first value {first_test:.3g}"
        return None

    def on_round(self, rec: RoundRecord) -> None:
        stops = self.cfg.federation.on_divergence == "stop"
        if not self.after_evaluation:
            rec.reason = rec.forced_reason or self.reason(rec.row, rec.log)
            rec.stop = rec.reason is not None and (rec.forced_reason is not None or stops)
            return
        if rec.evaluated and rec.reason is None:  # the test loss is known now
            rec.reason = self.reason(rec.row, rec.log)
            rec.stop = rec.reason is not None and stops
        if rec.reason is None:
            return
        rec.row["diverged"] = rec.reason
        if self.run.diverged is None:
            self.run.diverged = {"round": rec.log.round, "reason": rec.reason}
            # the run's directory in the line: a sweep's workers log into one terminal
            log.warning(
                "run diverged in round %d: %s (federation.on_divergence: %s; run %s)",
                rec.log.round,
                rec.reason,
                "stop" if rec.stop else self.cfg.federation.on_divergence,
                self.run_name,
            )
