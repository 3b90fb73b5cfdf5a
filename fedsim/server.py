"""The Flower ServerApp: ``strategy.start(...)`` with central evaluation and run records.

``main(grid, context)`` builds the initial model and the strategy, finds which node
holds which partition, resumes from the last checkpoint when asked, and runs the
strategy. After each round's aggregation the parties whose replies were aggregated
keep their new client state; after every round :class:`Recorder` (the strategy's
``after_round`` hook) evaluates the global model on the test set, measures the
cohort's model heterogeneity, checks for divergence, appends ``metrics.jsonl`` and
``clients.jsonl``, and checkpoints. At the end it writes ``model.pt``,
``summary.json`` and the plots.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

import strategies
from strategies.arrays import is_float, state_to_record
from strategies.strategy import CohortFailure, FederationSetup, NonFiniteModel, RoundHooks, RoundLog

from .checkpoint import latest_checkpoint, save_checkpoint
from .config import config_hash
from .errors import ConfigError, RunAborted, RunDirError
from .experiment import Experiment, RunSettings, apply_determinism, experiment_for, prepare_run_dir, resolve_device
from .heterogeneity import heterogeneity_of_states
from .metrics import classification_metrics, spread
from .models import build_model
from .seeding import derive
from .store import ClientStateStore, atomic_torch_save, atomic_write_json
from .training import evaluate, make_criterion

log = logging.getLogger(__name__)


@dataclass
class RunHooks:
    """Callbacks of the process that started the run (the CLI's progress bar)."""

    on_start: Optional[Callable[[int, int], None]] = None  # (start_round, rounds)
    on_round: Optional[Callable[[dict], None]] = None  # the metrics row


# ------------------------------------------------------------------ discovery


def discover_partitions(grid: Grid, n_parties: int, timeout: float = 600.0) -> dict[int, int]:
    """party id -> node id.

    The local engine knows its mapping; on Flower's runtimes node ids are opaque,
    so every node is asked once (a ``query`` message) which partition it holds.
    """
    mapping = getattr(grid, "node_of_party", None)
    if mapping is not None:
        return dict(mapping)
    deadline = time.time() + timeout
    while len(list(grid.get_node_ids())) < n_parties and time.time() < deadline:
        time.sleep(0.2)
    node_ids = list(grid.get_node_ids())
    msgs = [Message(RecordDict({"config": ConfigRecord({"ask": "partition-id"})}), dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
    replies = grid.send_and_receive(msgs, timeout=timeout)
    out: dict[int, int] = {}
    for r in replies:
        if r.has_content():
            pid = int(r.content["metrics"]["partition-id"])
            out[pid] = r.metadata.src_node_id
    if len(out) != n_parties:
        raise RuntimeError(f"found {len(out)} of {n_parties} partitions among {len(node_ids)} nodes")
    return out


# ------------------------------------------------------------------ evaluation


class CentralEvaluator:
    """Test metrics of the global model, and its accuracy on a fixed training sample."""

    def __init__(self, exp: Experiment, device: torch.device) -> None:
        cfg = exp.cfg
        b = exp.bundle
        self.cfg, self.bundle, self.device = cfg, b, device
        torch.manual_seed(derive(cfg.seed, "server-model"))
        self.model = build_model(cfg.model, b.input_shape, b.num_classes).to(device)
        self.criterion = make_criterion(cfg.train)
        n = int(b.y_train.numel())
        k = min(cfg.eval.train_sample, n)
        sample = np.sort(np.random.default_rng(derive(cfg.seed, "train-sample")).choice(n, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)
        self.train_idx = torch.from_numpy(sample.astype(np.int64))

    def __call__(self, state: "OrderedDict[str, torch.Tensor]") -> dict[str, Any]:
        self.model.load_state_dict(state)
        b, cfg = self.bundle, self.cfg
        loss, cm = evaluate(self.model, b.x_test, b.y_test, b.mean, b.std, b.num_classes, cfg.eval.batch_size, self.device, self.criterion, cfg.train.amp)
        m = classification_metrics(cm.numpy(), beta=cfg.eval.fbeta)
        out: dict[str, Any] = {"test_loss": loss}
        out.update({f"test_{k}": v for k, v in m.items()})
        out["test_confusion_matrix"] = cm.tolist()
        if self.train_idx.numel():
            tl, tcm = evaluate(
                self.model, b.x_train[self.train_idx], b.y_train[self.train_idx], b.mean, b.std, b.num_classes, cfg.eval.batch_size, self.device, self.criterion, cfg.train.amp
            )
            out["train_accuracy"] = float(tcm.diag().sum()) / max(1, int(tcm.sum()))
            out["train_eval_loss"] = tl
            out["train_test_gap"] = out["train_accuracy"] - out["test_accuracy"]
        return out


def round_heterogeneity(global_state, outcomes, agg_state) -> dict[str, Any]:
    """Model heterogeneity of the cohort (fedsim.heterogeneity), float entries only."""
    if not outcomes or global_state is None:
        return {}
    keys = [k for k, v in global_state.items() if is_float(v) and k in agg_state and all(o.state is not None and k in o.state for o in outcomes)]
    return heterogeneity_of_states(global_state, [o.state for o in outcomes], agg_state, keys)


# -------------------------------------------------------------------- recorder


def open_tensorboard(store):
    """One TensorBoard event stream per run, in ``run_dir/tensorboard`` (the extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError("output.tensorboard: true needs tensorboard: pip install 'fedsim[tensorboard]'") from exc
    return SummaryWriter(log_dir=str(store.root / "tensorboard"))


def nonfinite_failures(rl: RoundLog) -> int:
    """Clients of the round whose reply was non-finite by training, not by an injected fault."""
    return sum(1 for f in rl.failures if f.stage == "train" and f.reason.startswith("non-finite") and "(injected)" not in f.reason)


class Recorder:
    """The strategy's ``after_round`` hook: records, evaluates and checkpoints each round."""

    def __init__(self, exp: Experiment, strategy, evaluator: CentralEvaluator, history: list[dict], wall_offset: float, hooks: RunHooks | None) -> None:
        self.exp, self.cfg, self.store = exp, exp.cfg, exp.store
        self.strategy = strategy
        self.evaluator = evaluator
        self.history = history
        self.hooks = hooks or RunHooks()
        self.t_start = time.perf_counter()
        self.t_prev = self.t_start
        self.wall_offset = wall_offset
        self.hash = config_hash(self.cfg)
        self.last_state: OrderedDict[str, torch.Tensor] | None = None
        self.diverged: dict[str, Any] | None = next(
            ({"round": r["round"], "reason": r["diverged"]} for r in history if r.get("diverged")), None
        )
        self.tensorboard = open_tensorboard(self.store) if self.cfg.output.tensorboard else None

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()

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
        if factor > 0 and test_loss is not None and first_test is not None and first_test > 0 and test_loss > factor * first_test:
            return f"the test loss {test_loss:.3g} is above {factor:g} x its first value {first_test:.3g}"
        return None

    def __call__(self, rl: RoundLog, forced_reason: str | None = None) -> bool:
        """Record round ``rl``; True when the run must stop (it diverged, ``on_divergence: stop``)."""
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
        if cfg.eval.model_heterogeneity and state is not None:
            row.update(round_heterogeneity(rl.global_state, outcomes, state))
        reason = forced_reason or self.divergence(row, rl)
        stop = reason is not None and (forced_reason is not None or cfg.federation.on_divergence == "stop")
        every = cfg.federation.eval_every
        evaluated = state is not None and every > 0 and (server_round % every == 0 or server_round == cfg.federation.rounds or stop)
        if evaluated:
            row.update(self.evaluator(state))
            if reason is None:
                reason = self.divergence(row, rl)
                stop = reason is not None and cfg.federation.on_divergence == "stop"
        if reason is not None:
            row["diverged"] = reason
            if self.diverged is None:
                self.diverged = {"round": server_round, "reason": reason}
                log.warning("run diverged in round %d: %s (federation.on_divergence: %s)", server_round, reason,
                            "stop" if stop else cfg.federation.on_divergence)
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
        if state is not None and ck_every and (server_round % ck_every == 0 or server_round == cfg.federation.rounds or stop):
            self.store.sync_records()
            save_checkpoint(self.store, server_round, state, self.strategy.state_dict(), self.history, self.wall_time(), self.hash, cfg.output.keep_checkpoints)
        if self.tensorboard is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "round" and math.isfinite(value):
                    self.tensorboard.add_scalar(key, value, server_round)
            self.tensorboard.flush()
        if self.hooks.on_round:
            self.hooks.on_round(row)
        return stop

    def record_failed_round(self, rl: RoundLog) -> None:
        """An aborted round's failure reasons, before the run stops (a resume drops them)."""
        self.store.append_jsonl(self.store.metrics, [{"round": rl.round, "aborted": True, "clients": len(rl.outcomes), "sampled": len(rl.sampled),
                                                      "failures": [{"party": f.party, "reason": f.reason, "stage": f.stage} for f in rl.failures]}])
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
                    **{k: v for k, v in m.items() if k not in ("num-examples", "train_loss", "train_accuracy", "steps", "epochs", "train_time_s", "party-id")},
                }
            )
        for o in rl.eval_outcomes:
            rows.append({"round": server_round, "party": o.party, "stage": "evaluate", "status": "ok", "num_examples": o.num_examples,
                         "val_loss": o.metrics.get("val_loss"), "val_accuracy": o.metrics.get("val_accuracy")})
        for f in rl.failures:
            rows.append({"round": server_round, "party": f.party, "stage": f.stage, "status": "failed", "reason": f.reason})
        return rows


# ------------------------------------------------------------------------ main


def initial_state(exp: Experiment) -> "OrderedDict[str, torch.Tensor]":
    """The global model before round 1, from (seed, "init")."""
    b = exp.bundle
    torch.manual_seed(derive(exp.cfg.seed, "init"))
    model = build_model(exp.cfg.model, b.input_shape, b.num_classes)
    return OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())


def run_server(grid: Grid, settings: RunSettings, hooks: RunHooks | None = None) -> dict[str, Any]:
    """Run the whole federation on ``grid``; returns the summary."""
    t0 = time.perf_counter()
    exp = experiment_for(settings)
    cfg, store = exp.cfg, exp.store
    store.root.mkdir(parents=True, exist_ok=True)
    prepare_run_dir(cfg, store, plots=cfg.output.plots)
    apply_determinism(cfg)
    if cfg.engine.threads > 0:
        torch.set_num_threads(cfg.engine.threads)
    device = resolve_device(cfg.engine.device)
    node_of_party = discover_partitions(grid, cfg.partition.n_parties)
    evaluator = CentralEvaluator(exp, device)
    strategy = strategies.build(cfg.strategy)
    strategy.bind(
        FederationSetup(
            seed=cfg.seed,
            node_of_party=node_of_party,
            fraction_fit=cfg.federation.fraction_fit,
            fraction_evaluate=cfg.federation.fraction_evaluate,
            min_fit_clients=cfg.federation.min_fit_clients,
            max_failure_fraction=cfg.federation.max_failure_fraction,
            param_keys=frozenset(n for n, p in evaluator.model.named_parameters() if p.requires_grad),
            device=str(device),
        )
    )
    client_state = ClientStateStore(store.client_state)
    history: list[dict] = []
    start_round, wall_offset = 1, 0.0
    state = initial_state(exp)
    ckpt = latest_checkpoint(store) if settings.resume else None
    if ckpt is not None:
        if ckpt.config_hash and ckpt.config_hash != config_hash(cfg):
            raise RunDirError(f"checkpoint '{ckpt.path}' was made with another config; resume with the run's own config.yaml")
        state = OrderedDict(ckpt.arrays)
        strategy.load_state_dict(ckpt.strategy)
        history = ckpt.history
        start_round, wall_offset = ckpt.round + 1, ckpt.wall_time_s
        store.truncate_records(ckpt.round, history)
        client_state.restore(ckpt.path / "client_state")
        log.info("resuming from %s (round %d)", ckpt.path, ckpt.round)
    else:
        # a fresh start (or nothing to resume from): clean records, empty client state,
        # and a round-0 checkpoint so that even a run stopped in round 1 can resume
        store.truncate_records(0, [])
        client_state.clear()
        if cfg.output.checkpoint_every:
            save_checkpoint(store, 0, state, strategy.state_dict(), [], time.perf_counter() - t0, config_hash(cfg), cfg.output.keep_checkpoints)
    client_state.discard_pending()
    recorder = Recorder(exp, strategy, evaluator, history, wall_offset + (time.perf_counter() - t0), hooks)
    recorder.last_state = state
    if hooks and hooks.on_start:
        hooks.on_start(start_round, cfg.federation.rounds)
    # the dataset, models and Flower's modules live for the whole run: keep the cyclic
    # garbage collector from re-scanning them (full collections paused rounds 0.1-0.3 s)
    gc.collect()
    gc.freeze()
    round_hooks = RoundHooks(
        # only the parties whose replies were aggregated keep the state they computed
        after_aggregate=lambda rl: client_state.commit(rl.round, [o.party for o in rl.outcomes]),
        after_round=recorder,
    )
    stopped = recorder.diverged is not None and cfg.federation.on_divergence == "stop"
    if start_round <= cfg.federation.rounds and not stopped:
        try:
            strategy.start(
                grid=grid,
                initial_arrays=state_to_record(state),
                num_rounds=cfg.federation.rounds,
                timeout=cfg.engine.client_timeout or 3600.0,
                start_round=start_round,
                hooks=round_hooks,
            )
        except NonFiniteModel as exc:
            recorder(strategy.round_log, forced_reason=str(exc).split(": ", 1)[-1])
        except CohortFailure as exc:
            rl = strategy.round_log
            if 2 * nonfinite_failures(rl) > len(rl.sampled):
                recorder(rl, forced_reason=f"{nonfinite_failures(rl)} of {len(rl.sampled)} clients returned non-finite weights or loss")
            else:
                recorder.record_failed_round(rl)
                last = history[-1]["round"] if history else 0
                raise RunAborted(f"run stopped: {exc}; resume from round {last} with --resume") from exc
        finally:
            client_state.discard_pending()
            recorder.close()
            gc.unfreeze()
    final = recorder.last_state if recorder.last_state is not None else state
    atomic_torch_save(store.model, {k: v.detach().cpu() for k, v in final.items()})
    summary = build_summary(exp, history, recorder.wall_time(), evaluator, final, recorder.diverged)
    atomic_write_json(store.summary, summary)
    if cfg.output.plots:
        from .plots import plot_run

        plot_run(store)
    return summary


def build_summary(exp: Experiment, history: list[dict], wall_time_s: float, evaluator: CentralEvaluator, final_state,
                  diverged: dict[str, Any] | None = None) -> dict[str, Any]:
    import json

    cfg = exp.cfg
    evaluated = [r for r in history if r.get("test_accuracy") is not None]
    last = evaluated[-1] if evaluated else {}
    best = max(evaluated, key=lambda r: r["test_accuracy"]) if evaluated else {}
    part = json.loads(exp.store.partition.read_text()) if exp.store.partition.exists() else {}
    het = {k: v for k, v in part.items() if k not in ("class_counts", "scheme", "params", "seed", "dataset", "noise_levels", "feature_noise")}
    n_params = int(sum(v.numel() for v in final_state.values() if is_float(v)))
    return {
        "status": "diverged" if diverged else "finished",
        "diverged_round": diverged["round"] if diverged else None,
        "divergence_reason": diverged["reason"] if diverged else None,
        "rounds": len(history) and history[-1]["round"],
        "test_accuracy": last.get("test_accuracy"),
        "test_loss": last.get("test_loss"),
        "test_f1_macro": last.get("test_f1_macro"),
        "test_precision_macro": last.get("test_precision_macro"),
        "test_recall_macro": last.get("test_recall_macro"),
        "test_f1_weighted": last.get("test_f1_weighted"),
        "test_fbeta_macro": last.get("test_fbeta_macro"),
        "train_accuracy": last.get("train_accuracy"),
        "train_test_gap": last.get("train_test_gap"),
        "best_test_accuracy": best.get("test_accuracy"),
        "best_round": best.get("round"),
        "val_accuracy": next((r.get("val_accuracy") for r in reversed(history) if r.get("val_accuracy") is not None), None),
        "wall_time_s": wall_time_s,
        "strategy": cfg.strategy.name,
        "partition": {"scheme": cfg.partition.scheme, "n_parties": cfg.partition.n_parties, **part.get("params", {})},
        "heterogeneity": het,
        "dataset": cfg.data.dataset,
        "model": cfg.model.name,
        "model_parameters": n_params,
        "seed": cfg.seed,
        "engine": cfg.engine.name,
        "bytes_up_total": int(sum(r.get("bytes_up", 0) for r in history)),
        "bytes_down_total": int(sum(r.get("bytes_down", 0) for r in history)),
        "failures_total": int(sum(len(r.get("failures", [])) for r in history)),
        "config_hash": config_hash(cfg),
        # what exact repeats depend on besides the config (README "Reliability")
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
    }


def make_server_app(settings: RunSettings | None = None, hooks: RunHooks | None = None) -> ServerApp:
    """A ServerApp bound to ``settings`` or reading them from ``context.run_config``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if settings is not None:
            run_server(grid, settings, hooks)
            return
        # `flwr run .`: no fedsim front end has checked the input or made the directory
        from . import rundir
        from .api import check_resume, check_runnable, quiet_flower

        quiet_flower()
        s = RunSettings.from_context(context)
        exp = experiment_for(s)
        rundir.claim(exp.store.root, "run", resume=s.resume, overwrite=False, check_only=True)
        if s.resume and check_resume(exp.cfg, exp.store) is not None:
            return
        check_runnable(exp.cfg, exp.store, s.resume)
        with rundir.DirLock(exp.store.root, "run"):
            rundir.claim(exp.store.root, "run", resume=s.resume, overwrite=False)
            run_server(grid, s, hooks)

    return app


#: the app `flwr run .` loads (see [tool.flwr.app.components] in pyproject.toml)
server_app = make_server_app()
