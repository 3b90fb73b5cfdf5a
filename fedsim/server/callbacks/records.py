"""The round's files: ``metrics.jsonl`` (the row, with the round's time), ``clients.jsonl``
(one row per reply and failure, malicious parties marked) and ``parties.jsonl`` (the
per-party evaluation); the row joins the run's history. An aborted round's failures are
recorded too, so that the reason is on disk when the run stops (a resume drops them)."""

from __future__ import annotations

import time
from typing import Any

from fedsim.rundir.store import RunStore
from fedsim.server.callbacks.base import RoundCallback, RoundRecord, RunProgress
from fedsim.server.callbacks.training import failure_rows
from strategies.strategy import ClientOutcome, RoundLog

#: reply metrics that clients.jsonl holds under their own names (or not at all)
_NAMED = ("num-examples", "train_loss", "train_accuracy", "steps", "epochs", "train_time_s", "party-id")


def train_row(server_round: int, o: ClientOutcome) -> dict[str, Any]:
    """A training reply's ``clients.jsonl`` row."""
    m = o.metrics
    return {
        "round": server_round,
        "party": o.party,
        "stage": "train",
        "status": "ok",
        "num_examples": o.num_examples,
        "train_loss": m.get("train_loss"),
        "train_accuracy": m.get("train_accuracy"),
        "steps": m.get("steps"),
        "epochs": m.get("epochs"),
        "time_s": m.get("train_time_s"),
        "bytes_up": o.bytes_up,
        # what the party downloaded to train: the broadcast, or with comm.downlink the
        # compressed updates it missed (fedsim/comm/downlink.py)
        "bytes_down": o.bytes_down,
        **{k: v for k, v in m.items() if k not in _NAMED},
    }


def client_rows(rl: RoundLog, malicious: frozenset[int]) -> list[dict[str, Any]]:
    """The round's ``clients.jsonl`` rows: training replies, evaluation replies, failures."""
    rows = [train_row(rl.round, o) for o in rl.outcomes]
    rows += [
        {
            "round": rl.round,
            "party": o.party,
            "stage": "evaluate",
            "status": "ok",
            "num_examples": o.num_examples,
            "val_loss": o.metrics.get("val_loss"),
            "val_accuracy": o.metrics.get("val_accuracy"),
        }
        for o in rl.eval_outcomes
    ]
    rows += [
        {"round": rl.round, "party": f.party, "stage": f.stage, "status": "failed", "reason": f.reason}
        for f in rl.failures
    ]
    for r in rows:
        if r["party"] in malicious:
            r["malicious"] = True
    return rows


class Records(RoundCallback):
    def __init__(self, store: RunStore, run: RunProgress, malicious: frozenset[int]) -> None:
        self.store, self.run, self.malicious = store, run, malicious
        self.t_prev = run.t_start

    def on_round(self, rec: RoundRecord) -> None:
        now = time.perf_counter()
        rec.row["round_time_s"] = now - self.t_prev
        self.t_prev = now
        if rec.party_rows is not None:
            self.store.append_jsonl(self.store.parties, rec.party_rows)
        self.run.history.append(rec.row)
        self.store.append_jsonl(self.store.metrics, [rec.row])
        self.store.append_jsonl(self.store.clients, client_rows(rec.log, self.malicious))

    def on_abort(self, rl: RoundLog) -> None:
        aborted = {
            "round": rl.round,
            "aborted": True,
            "clients": len(rl.outcomes),
            "sampled": len(rl.sampled),
            "failures": failure_rows(rl),
        }
        self.store.append_jsonl(self.store.metrics, [aborted])
        self.store.append_jsonl(self.store.clients, client_rows(rl, self.malicious))
