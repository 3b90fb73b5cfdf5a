"""What a run ends with (README "Run directory"): ``model.pt``, ``summary.json``, the
plots, and the outcome the engine returns (no re-reading from disk)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch

from fedsim.inputs.adversary import summary_fields as attack_summary
from fedsim.inputs.run_inputs import Experiment
from fedsim.privacy.run import summary_fields as privacy_summary
from fedsim.rundir.plots import plot_run
from fedsim.rundir.store import atomic_torch_save, atomic_write_json, read_jsonl
from fedsim.schema.identity import config_hash
from fedsim.server.recorder import Recorder
from fedsim.system.sources import load_profiles
from fedsim.system.summary import summary_fields as system_summary
from strategies.arrays import is_float


@dataclass
class RunOutcome:
    """What a run produced: its summary and its metrics rows (as written to disk)."""

    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def finish_run(exp: Experiment, recorder: Recorder) -> RunOutcome:
    """Write the final model, ``summary.json`` and the plots, then hand the summary to the
    recorder's callbacks (the trackers get it and the files)."""
    final = recorder.last_state
    atomic_torch_save(exp.store.model, {k: v.detach().cpu() for k, v in final.items()})
    summary = build_summary(exp, recorder.history, recorder.wall_time(), final, recorder.diverged)
    atomic_write_json(exp.store.summary, summary)
    if exp.cfg.output.plots:
        plot_run(exp.store)
    recorder.finish(summary)
    return RunOutcome(summary, recorder.history)


def build_summary(
    exp: Experiment, history: list[dict], wall_time_s: float, final_state, diverged: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The summary of a run from its history of metrics rows and its final weights."""
    cfg = exp.cfg
    evaluated = [r for r in history if r.get("test_accuracy") is not None]
    last = evaluated[-1] if evaluated else {}
    best = max(evaluated, key=lambda r: r["test_accuracy"]) if evaluated else {}
    part = json.loads(exp.store.partition.read_text()) if exp.store.partition.exists() else {}
    het = {
        k: v
        for k, v in part.items()
        if k not in ("class_counts", "scheme", "params", "seed", "dataset", "noise_levels", "feature_noise")
    }
    n_params = int(sum(v.numel() for v in final_state.values() if is_float(v)))
    # why a run ended before federation.rounds on purpose (a divergence has its own fields)
    stop = next((r["privacy_stop"] for r in history if r.get("privacy_stop")), None)
    comm_stop = history[-1].get("comm_stop") if history else None  # comm.budget_mb: resumable
    out = {
        "status": "diverged" if diverged else ("stopped" if stop else "budget" if comm_stop else "finished"),
        "stop_reason": f"privacy budget: {stop}" if stop and not diverged else comm_stop if not diverged else None,
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
        "val_accuracy": next(
            (r.get("val_accuracy") for r in reversed(history) if r.get("val_accuracy") is not None), None
        ),
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
        # attack, malicious_parties, defence, attack_success_rate (runs with an attack or a defence)
        **attack_summary(cfg, last),
        # what exact repeats depend on besides the config (README "Reliability")
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        # privacy.mode: privacy_mode, epsilon, delta, accountant, noise_multiplier, privacy_stop
        **privacy_summary(cfg, history),
    }
    if cfg.eval.local_test != "none":
        out.update(party_summary(history, exp.holdout))
    # sim_time_s, time_to_accuracy, participation (a system source or eval.target_accuracy)
    profiles = load_profiles(cfg)
    clients = read_jsonl(exp.store.clients) if profiles is not None and exp.store.clients.exists() else []
    parties = read_jsonl(exp.store.parties) if profiles is not None and exp.store.parties.exists() else []
    out.update(system_summary(history, cfg.eval.target_accuracy, profiles, clients, part.get("class_counts"), parties))
    return out


def party_summary(history: list[dict], holdout: list[int]) -> dict[str, Any]:
    """The last per-party evaluation (:mod:`fedsim.server.party_eval`): for each mode the pooled
    accuracy over the parties' own test samples (``wmean``: PFLlib's and FL-bench's
    number), its std, worst and best 10%, worst party and Jain's index over parties; the
    held-out parties' likewise."""
    last = next((r for r in reversed(history) if r.get("local_accuracy_wmean") is not None), {})
    out: dict[str, Any] = {"holdout_parties": list(holdout)}
    for mode in ("local", "personal", "finetune"):
        for prefix in (mode, f"holdout_{mode}"):
            name = prefix.replace(mode, f"{mode}_test")
            out[f"{name}_accuracy"] = last.get(f"{prefix}_accuracy_wmean")
            for stat in ("std", "worst10", "best10", "worst", "jain"):
                out[f"{name}_accuracy_{stat}"] = last.get(f"{prefix}_accuracy_{stat}")
            out[f"{name}_f1_macro"] = last.get(f"{prefix}_f1_macro_mean")
    return out
