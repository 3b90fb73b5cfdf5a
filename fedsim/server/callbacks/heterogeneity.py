"""Model heterogeneity of the round's cohort (``eval.model_heterogeneity``): how far the
replies lie from each other and from the aggregate (:func:`fedsim.server.evaluation.round_heterogeneity`)."""

from __future__ import annotations

from fedsim.server.callbacks.base import RoundCallback, RoundRecord
from fedsim.server.evaluation import round_heterogeneity


class ModelHeterogeneity(RoundCallback):
    def on_round(self, rec: RoundRecord) -> None:
        if rec.state is not None:
            rec.row.update(round_heterogeneity(rec.log.global_state, rec.log.outcomes, rec.state))
