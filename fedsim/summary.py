"""``summary.json``: what a run ended with (README "Run directory")."""

from __future__ import annotations

import json
from typing import Any

import torch

from strategies.arrays import is_float

from .adversary import summary_fields
from .config import config_hash
from .experiment import Experiment


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
        **summary_fields(cfg, last),
        # what exact repeats depend on besides the config (README "Reliability")
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
    }
