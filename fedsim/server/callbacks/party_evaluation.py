"""Every party's own test data (``eval.local_test``), when the global model is evaluated:
the summary in the row, one ``parties.jsonl`` row per party
(:class:`fedsim.server.party_eval.PartyEvaluator`)."""

from __future__ import annotations

from fedsim.server.callbacks.base import RoundCallback, RoundRecord
from fedsim.server.party_eval import PartyEvaluator


class PartyEvaluation(RoundCallback):
    def __init__(self, parties: PartyEvaluator) -> None:
        self.parties = parties

    def on_round(self, rec: RoundRecord) -> None:
        if not rec.evaluated:
            return
        summary, rec.party_rows = self.parties(rec.log.round, rec.state)
        rec.row.update(summary)
