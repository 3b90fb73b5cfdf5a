"""The row's first part: what the cohort's training replies say, and what the server computed.

The example-weighted means of the clients' training loss, objective and accuracy, the
cohort's size, failures, bytes and local steps, the server's own values (a reply rule's,
the algorithm's, privacy's), and with an attack how many aggregated replies came from
malicious parties.
"""

from __future__ import annotations

import numpy as np

from fedsim.inputs.adversary import malicious_parties
from fedsim.schema.experiment import ExperimentConfig
from fedsim.server.callbacks.base import RoundCallback, RoundRecord, RunProgress
from strategies.strategy import ClientOutcome


def weighted_mean(outcomes: list[ClientOutcome], key: str) -> float | None:
    """The mean of metric ``key`` over the replies that report it, weighted by examples."""
    vals = [(o.metrics.get(key), o.num_examples) for o in outcomes if o.metrics.get(key) is not None]
    total = sum(w for _, w in vals)
    return sum(v * w for v, w in vals) / total if total else None


def failure_rows(rl) -> list[dict]:
    """The round's failures as ``metrics.jsonl`` records them."""
    return [{"party": f.party, "reason": f.reason, "stage": f.stage} for f in rl.failures]


def bytes_before(history: list[dict], server_round: int, key: str) -> int:
    """The run's ``key`` bytes (``bytes_up``, ``bytes_down``) over the rows before
    ``server_round``: the last one's ``<key>_total``, or the sum (rows of older runs)."""
    rows = [r for r in history if r["round"] < server_round]
    if rows and rows[-1].get(f"{key}_total") is not None:
        return int(rows[-1][f"{key}_total"])
    return sum(int(r.get(key) or 0) for r in rows)


class TrainingRow(RoundCallback):
    def __init__(self, cfg: ExperimentConfig, run: RunProgress) -> None:
        self.run = run
        # with an attack: its malicious parties, counted among the aggregated replies
        self.malicious = frozenset(malicious_parties(cfg)) if cfg.attack.name != "none" else None

    def on_round(self, rec: RoundRecord) -> None:
        rl, row = rec.log, rec.row
        outcomes = rl.outcomes
        row["train_loss"] = weighted_mean(outcomes, "train_loss")
        row["train_objective"] = weighted_mean(outcomes, "train_objective")
        row["client_train_accuracy"] = weighted_mean(outcomes, "train_accuracy")
        row["clients"] = len(outcomes)
        row["sampled"] = len(rl.sampled)
        row["num_examples"] = sum(o.num_examples for o in outcomes)
        row["failures"] = failure_rows(rl)
        row["bytes_down"] = int(rl.bytes_down)
        row["bytes_up"] = int(rl.bytes_up)
        for key in ("bytes_up", "bytes_down"):
            row[f"{key}_total"] = bytes_before(self.run.history, rl.round, key) + row[key]
        row["local_steps_mean"] = float(np.mean([o.metrics.get("steps", 0) for o in outcomes])) if outcomes else None
        row.update(rl.server_metrics)
        if self.malicious is not None:
            row["malicious_clients"] = sum(1 for o in outcomes if o.party in self.malicious)
