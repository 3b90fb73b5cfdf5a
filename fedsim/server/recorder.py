"""A run's records, round by round: the strategy's ``after_round`` hook.

For every round it builds the ``metrics.jsonl`` row (training metrics of the cohort,
failures, bytes, model heterogeneity, central evaluation, every party's own test data
(:mod:`fedsim.server.party_eval`, rows in ``parties.jsonl``), local validation), checks
for divergence (README "Reliability"), appends the ``clients.jsonl`` rows, writes the
checkpoint, hands the row to the run's trackers (:mod:`fedsim.trackers`) and tells the
caller (the CLI's progress bar).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedsim.config.load import config_hash, yaml_keys
from fedsim.measures.metrics import spread
from fedsim.prepare.adversary import AttackEvaluator, malicious_parties
from fedsim.prepare.run_inputs import Experiment
from fedsim.rundir.checkpoint import save_checkpoint
from fedsim.server.evaluation import CentralEvaluator, round_heterogeneity
from fedsim.server.party_eval import PartyEvaluator
from fedsim.trackers import RunTrackers, TrackingContext
from strategies.strategy import RoundLog

log = logging.getLogger(__name__)


def nonfinite_failures(rl: RoundLog) -> int:
    """Clients of the round whose reply was non-finite by training, not by an injected fault."""
    return sum(
        1
        for f in rl.failures
        if f.stage == "train" and f.reason.startswith("non-finite") and "(injected)" not in f.reason
    )


class Recorder:
    """The strategy's ``after_round`` hook: records, evaluates and checkpoints each round."""

    def __init__(
        self,
        exp: Experiment,
        strategy,
        evaluator: CentralEvaluator,
        history: list[dict],
        wall_offset: float,
        on_round: Callable[[dict], None] | None = None,
        parties: PartyEvaluator | None = None,
        tracking: TrackingContext | None = None,
    ) -> None:
        self.exp, self.cfg, self.store = exp, exp.cfg, exp.store
        self.strategy = strategy
        self.evaluator = evaluator
        self.parties = parties if parties is not None and parties.enabled else None
        self.history = history
        self.on_round = on_round
        self.t_start = time.perf_counter()
        self.t_prev = self.t_start
        self.wall_offset = wall_offset
        # over the run's own keys (config.yaml): a run an older fedsim started keeps its hash
        self.hash = config_hash(self.cfg, yaml_keys(self.store.config) if self.store.config.exists() else None)
        self.last_state: OrderedDict[str, torch.Tensor] | None = None
        self.diverged: dict[str, Any] | None = next(
            ({"round": r["round"], "reason": r["diverged"]} for r in history if r.get("diverged")), None
        )
        # experiment trackers (MLflow, W&B, TensorBoard) get every row as it is written
        self.trackers = RunTrackers(self.cfg, self.store.root, history, tracking)
        # attacks: the malicious parties (marked in clients.jsonl) and the attack's success
        self.malicious = frozenset(malicious_parties(self.cfg))
        self.attack_eval = AttackEvaluator(self.cfg, exp.bundle, evaluator.device)

    def close(self) -> None:
        """Called in the server's ``finally``: a run stopped by an exception (aborted,
        interrupted, a pruned trial) ends its trackers' runs as failed or killed."""
        exc = sys.exc_info()[1]
        if exc is not None:
            status = getattr(exc, "tracker_status", None) or (
                "killed" if isinstance(exc, KeyboardInterrupt) else "failed"
            )
            self.trackers.end(status)

    def finish(self, summary: dict) -> None:
        """The run's summary and files to its trackers (after summary.json and the plots)."""
        self.trackers.finish(summary)

    def wall_time(self) -> float:
        return self.wall_offset + time.perf_counter() - self.t_start

    def divergence(self, row: dict, rl: RoundLog) -> str | None:
        """Why this round counts as diverged, or None (README "Reliability")."""
        bad = nonfinite_failures(rl)
        if rl.sampled and 2 * bad > len(rl.sampled):
            return f"{bad} of {len(rl.sampled)} clients returned non-finite weights or loss"
        loss, factor = row.get("train_loss"), self.cfg.federation.divergence_factor
        ref = next((r["train_loss"] for r in self.history if r.get("train_loss") is not None), None)
        if loss is not None and not math.isfinite(loss):
            return f"the mean training loss is {loss}"
        if factor > 0 and loss is not None and ref is not None and ref > 0 and loss > factor * ref:
            return f"the mean training loss {loss:.3g} is above {factor:g} x round {self.history[0]['round'] if self.history else 1}'s {ref:.3g}"
        test_loss = row.get("test_loss")
        if test_loss is not None and not math.isfinite(test_loss):
            return f"the test loss is {test_loss}"
        first_test = next((r["test_loss"] for r in self.history if r.get("test_loss") is not None), None)
        if (
            factor > 0
            and test_loss is not None
            and first_test is not None
            and first_test > 0
            and test_loss > factor * first_test
        ):
            return f"the test loss {test_loss:.3g} is above {factor:g} x its first value {first_test:.3g}"
        return None

    def __call__(self, rl: RoundLog, forced_reason: str | None = None, last: bool = False) -> bool:
        """Record round ``rl``; True when the run must stop (it diverged, ``on_divergence: stop``).

        ``last``: the run ends after this round although ``federation.rounds`` is not
        reached (the privacy budget): its model is evaluated and checkpointed like a
        final round's, whatever ``eval_every`` and ``checkpoint_every`` say."""
        cfg = self.cfg
        server_round = rl.round
        state = rl.agg_state if forced_reason is None else None
        if state is not None:
            self.last_state = state
        row: dict[str, Any] = {"round": server_round}
        outcomes = rl.outcomes
        weights = [o.num_examples for o in outcomes]
        tot = sum(weights)

        def wmean(key: str) -> float | None:
            vals = [(o.metrics.get(key), w) for o, w in zip(outcomes, weights) if o.metrics.get(key) is not None]
            s = sum(w for _, w in vals)
            return sum(v * w for v, w in vals) / s if s else None

        row["train_loss"] = wmean("train_loss")
        row["train_objective"] = wmean("train_objective")
        row["client_train_accuracy"] = wmean("train_accuracy")
        row["clients"] = len(outcomes)
        row["sampled"] = len(rl.sampled)
        row["num_examples"] = tot
        row["failures"] = [{"party": f.party, "reason": f.reason, "stage": f.stage} for f in rl.failures]
        row["bytes_down"] = int(rl.bytes_down)
        row["bytes_up"] = int(rl.bytes_up)
        row["local_steps_mean"] = float(np.mean([o.metrics.get("steps", 0) for o in outcomes])) if outcomes else None
        row.update(rl.server_metrics)
        if cfg.attack.name != "none":
            row["malicious_clients"] = sum(1 for o in outcomes if o.party in self.malicious)
        if cfg.eval.model_heterogeneity and state is not None:
            row.update(round_heterogeneity(rl.global_state, outcomes, state))
        reason = forced_reason or self.divergence(row, rl)
        stop = reason is not None and (forced_reason is not None or cfg.federation.on_divergence == "stop")
        every = cfg.federation.eval_every
        evaluated = (
            state is not None
            and every > 0
            and (server_round % every == 0 or server_round == cfg.federation.rounds or stop or last)
        )
        if evaluated:
            row.update(self.evaluator(state))
            row.update(self.attack_eval(self.evaluator.model))  # the weights just evaluated
            if self.parties is not None:
                summary, party_rows = self.parties(server_round, state)
                row.update(summary)
                self.store.append_jsonl(self.store.parties, party_rows)
            if reason is None:
                reason = self.divergence(row, rl)
                stop = reason is not None and cfg.federation.on_divergence == "stop"
        if reason is not None:
            row["diverged"] = reason
            if self.diverged is None:
                self.diverged = {"round": server_round, "reason": reason}
                # the run's directory in the line: a sweep's workers log into one terminal
                log.warning(
                    "run diverged in round %d: %s (federation.on_divergence: %s; run %s)",
                    server_round,
                    reason,
                    "stop" if stop else cfg.federation.on_divergence,
                    self.store.root.name,
                )
        if rl.eval_outcomes:
            accs = [o.metrics.get("val_accuracy") for o in rl.eval_outcomes]
            sp = spread(accs)
            row["val_accuracy"] = rl.eval_metrics.get("val_accuracy")
            row["val_loss"] = rl.eval_metrics.get("val_loss")
            row.update({f"val_accuracy_{k}": v for k, v in sp.items()})
        tr_sp = spread([o.metrics.get("train_accuracy") for o in outcomes])
        row.update({f"client_train_accuracy_{k}": v for k, v in tr_sp.items() if k != "mean"})
        now = time.perf_counter()
        row["round_time_s"] = now - self.t_prev
        self.t_prev = now
        self.history.append(row)
        self.store.append_jsonl(self.store.metrics, [row])
        self.store.append_jsonl(self.store.clients, self._client_rows(server_round, rl))
        ck_every = cfg.output.checkpoint_every
        if (
            state is not None
            and ck_every
            and (server_round % ck_every == 0 or server_round == cfg.federation.rounds or stop or last)
        ):
            self.store.sync_records()
            save_checkpoint(
                self.store,
                server_round,
                state,
                self.strategy.state_dict(),
                self.history,
                self.wall_time(),
                self.hash,
                cfg.output.keep_checkpoints,
            )
        self.trackers.log_round(row)
        if self.on_round is not None:
            self.on_round(row)
        return stop

    def record_failed_round(self, rl: RoundLog) -> None:
        """An aborted round's failure reasons, before the run stops (a resume drops them)."""
        self.store.append_jsonl(
            self.store.metrics,
            [
                {
                    "round": rl.round,
                    "aborted": True,
                    "clients": len(rl.outcomes),
                    "sampled": len(rl.sampled),
                    "failures": [{"party": f.party, "reason": f.reason, "stage": f.stage} for f in rl.failures],
                }
            ],
        )
        self.store.append_jsonl(self.store.clients, self._client_rows(rl.round, rl))

    def _client_rows(self, server_round: int, rl) -> list[dict]:
        rows = []
        for o in rl.outcomes:
            m = o.metrics
            rows.append(
                {
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
                    **{
                        k: v
                        for k, v in m.items()
                        if k
                        not in (
                            "num-examples",
                            "train_loss",
                            "train_accuracy",
                            "steps",
                            "epochs",
                            "train_time_s",
                            "party-id",
                        )
                    },
                }
            )
        for o in rl.eval_outcomes:
            rows.append(
                {
                    "round": server_round,
                    "party": o.party,
                    "stage": "evaluate",
                    "status": "ok",
                    "num_examples": o.num_examples,
                    "val_loss": o.metrics.get("val_loss"),
                    "val_accuracy": o.metrics.get("val_accuracy"),
                }
            )
        for f in rl.failures:
            rows.append(
                {"round": server_round, "party": f.party, "stage": f.stage, "status": "failed", "reason": f.reason}
            )
        for r in rows:
            if r["party"] in self.malicious:
                r["malicious"] = True
        return rows
