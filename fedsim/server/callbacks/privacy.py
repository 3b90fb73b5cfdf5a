"""Differential privacy's part of a round's records: the ledger and the budget.

Runs first: :meth:`fedsim.privacy.run.PrivacyRun.account` composes the round's release
into the ledger and puts epsilon, delta and the noise into the round's server values
(recorded with them in the row); a budget that the next round would exceed makes this
round the run's last (``privacy_stop``), evaluated and checkpointed like a final one.
"""

from __future__ import annotations

from fedsim.privacy.run import PrivacyRun
from fedsim.server.callbacks.base import RoundCallback, RoundRecord


class PrivacyAccounting(RoundCallback):
    def __init__(self, privacy: PrivacyRun) -> None:
        self.privacy = privacy

    def on_round(self, rec: RoundRecord) -> None:
        if rec.forced_reason is not None:
            return  # the round's model was refused (non-finite): nothing was released
        rec.last = self.privacy.account(rec.log) or rec.last
