"""Central evaluation of the global model: test metrics, the train/test gap, and the
model heterogeneity of a round's cohort (:mod:`fedsim.measures.heterogeneity`)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from fedsim.client.training import evaluate, make_criterion
from fedsim.inputs.run_inputs import Experiment
from fedsim.measures.heterogeneity import GRAM_MAX_CLIENTS, KEEP_UPDATES_BYTES, heterogeneity_of_states
from fedsim.measures.metrics import classification_metrics
from fedsim.models import build_model
from fedsim.util.seeding import derive, seed_torch
from strategies.arrays import float_vector, is_float


class CentralEvaluator:
    """Test metrics of the global model, and its accuracy on a fixed training sample."""

    def __init__(self, exp: Experiment, device: torch.device) -> None:
        cfg = exp.cfg
        b = exp.bundle
        self.cfg, self.bundle, self.device = cfg, b, device
        seed_torch(derive(cfg.seed, "server-model"))
        self.model = build_model(cfg.model, b.input_shape, b.num_classes).to(device)
        self.criterion = make_criterion(cfg.train)
        n = int(b.y_train.numel())
        k = min(cfg.eval.train_sample, n)
        sample = (
            np.sort(np.random.default_rng(derive(cfg.seed, "train-sample")).choice(n, size=k, replace=False))
            if k
            else np.zeros(0, dtype=np.int64)
        )
        self.train_idx = torch.from_numpy(sample.astype(np.int64))

    def __call__(self, state: OrderedDict[str, torch.Tensor]) -> dict[str, Any]:
        self.model.load_state_dict(state)
        b, cfg = self.bundle, self.cfg
        loss, cm = self._evaluate(b.x_test, b.y_test)
        m = classification_metrics(cm.numpy(), beta=cfg.eval.fbeta)
        out: dict[str, Any] = {"test_loss": loss}
        out.update({f"test_{k}": v for k, v in m.items()})
        out["test_confusion_matrix"] = cm.tolist()
        if self.train_idx.numel():
            tl, tcm = self._evaluate(b.x_train[self.train_idx], b.y_train[self.train_idx])
            out["train_accuracy"] = float(tcm.diag().sum()) / max(1, int(tcm.sum()))
            out["train_eval_loss"] = tl
            out["train_test_gap"] = out["train_accuracy"] - out["test_accuracy"]
        return out

    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(mean loss, confusion matrix) of the loaded model on ``x``, ``y``, normalised and
        batched as the run's evaluation is."""
        b, cfg = self.bundle, self.cfg
        return evaluate(
            self.model,
            x,
            y,
            b.mean,
            b.std,
            b.num_classes,
            cfg.eval.batch_size,
            self.device,
            self.criterion,
            cfg.train.amp,
        )


def round_heterogeneity(global_state, outcomes, agg_state) -> dict[str, Any]:
    """Model heterogeneity of the cohort (fedsim.measures.heterogeneity), float entries only."""
    if not outcomes or global_state is None:
        return {}
    keys = [
        k
        for k, v in global_state.items()
        if is_float(v) and k in agg_state and all(o.state is not None and k in o.state for o in outcomes)
    ]
    states = [o.state for o in outcomes]
    if len(states) > GRAM_MAX_CLIENTS and _all_packed(states, keys, KEEP_UPDATES_BYTES // 4):
        # in-process replies hold their weights as one vector each (strategies.arrays.
        # PackedState): the measures over that one block, not key by key (benchmarks/
        # peers.py 1000x10, 100 replies of simple-cnn's ten entries: 11.9 ms a round key by key)
        one = [{"w": float_vector(st, keys)} for st in states]
        g, a = ({"w": float_vector(s, keys)} for s in (global_state, agg_state))
        return heterogeneity_of_states(g, one, a, ["w"])
    return heterogeneity_of_states(global_state, states, agg_state, keys)


def _all_packed(states: list, keys: list[str], max_elements: int) -> bool:
    """Every state holds ``keys`` packed in one vector, and the cohort's K x P block has at
    most ``max_elements`` entries."""
    want = tuple(keys)
    packs = [getattr(st, "packed", None) for st in states]
    if any(p is None or p[0] != want for p in packs):
        return False
    return len(states) * packs[0][1].numel() <= max_elements
