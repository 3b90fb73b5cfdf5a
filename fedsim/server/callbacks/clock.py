"""The round on the simulated clock (``system.*``): its start and end in the row, and a
``clients.jsonl`` row for each reply the clock dropped (late, offline, surplus).

The aggregated replies carry their simulated times in their own rows (the clock put
them among the reply's metrics). Only in the list with a ``system`` source.
"""

from __future__ import annotations

from fedsim.rundir.store import RunStore
from fedsim.server.callbacks.base import RoundCallback, RoundRecord
from fedsim.system.run import SimulatedClock


class ClockRow(RoundCallback):
    def __init__(self, clock: SimulatedClock, store: RunStore, malicious: frozenset[int]) -> None:
        self.clock, self.store, self.malicious = clock, store, malicious

    def on_round(self, rec: RoundRecord) -> None:
        r = rec.log.round
        timing = self.clock.timing
        if timing is None or timing.round != r:  # no reply reached the clock (all failed)
            timing = self.clock.empty_round(r)
        rec.row["sim_start_s"] = timing.start_s
        rec.row["sim_end_s"] = timing.end_s
        rec.row["sim_round_s"] = timing.end_s - timing.start_s
        for status in ("late", "offline", "surplus"):
            rec.row[f"sim_{status}"] = timing.count(status)
        dropped = [
            {"round": r, "party": t.party, "stage": "train", "status": t.status, **t.fields()}
            for t in timing.replies
            if t.status != "ok"
        ]
        for row in dropped:
            if row["party"] in self.malicious:
                row["malicious"] = True
        self.store.append_jsonl(self.store.clients, dropped)
