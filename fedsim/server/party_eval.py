"""Every party's own test data, evaluated: how well does each party do?

With ``eval.local_test`` set, every ``federation.eval_every`` rounds and after the
last, each party of the evaluation cohort (every party, or ``eval.local_parties`` of
them drawn once from the seed; held-out parties always among them in proportion) is
tested on its own test data in up to three modes:

* ``local``: the global model (one model for every party: one pooled pass over
  the parties' test samples, split by party afterwards);
* ``personal``: the party's own model, for personalised algorithms
  (``Algorithm.personalize``: its personal layers or model from the client-state
  store, APFL's mixture, FedBABU's fine-tuned model);
* ``finetune``: the global model fine-tuned for ``eval.finetune_epochs`` local epochs
  on the party's training data (FedAvg+FT; any algorithm).

Per party: accuracy, mean loss and macro F1 (``parties.jsonl``). Per mode, over the
parties that train and separately over the held-out ones (``holdout_`` prefix):
mean, sample-weighted mean (the pooled accuracy PFLlib and FL-bench report), std,
the mean of the worst and of the best 10% of parties, the worst party's value and
Jain's fairness index (``metrics.jsonl``).

Models that differ per party run one at a time on a CPU, and as one
``torch.func.vmap`` pass over a chunk of stacked parameters on a GPU. Every draw
(fine-tuning batches, feature noise on test inputs) comes from (seed, purpose,
round, party), so an evaluation repeats exactly, also after a resume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

import strategies
from fedsim.client.training import Criterion, LocalTrainer, make_criterion, party_view
from fedsim.inputs.run_inputs import Experiment, on_device
from fedsim.models import build_model, has_batchnorm
from fedsim.rundir.store import ClientStateStore, remember_writes
from fedsim.util.seeding import derive, seed_torch, torch_generator

MODES = ("local", "personal", "finetune")
#: parties per vmapped chunk on a GPU (stacked parameters and activations)
PARTIES_PER_CHUNK = 64


@dataclass
class PartyScore:
    """One party's evaluation in one mode (a ``parties.jsonl`` row)."""

    party: int
    mode: str
    holdout: bool
    n_test: int
    accuracy: float
    loss: float
    f1_macro: float

    def row(self, server_round: int) -> dict:
        return {
            "round": server_round,
            "party": self.party,
            "mode": self.mode,
            "holdout": self.holdout,
            "n_test": self.n_test,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "f1_macro": self.f1_macro,
        }


def jain_index(values: np.ndarray) -> float:
    """Jain's fairness index (sum a_i)^2 / (n sum a_i^2): 1 when every party does
    equally well, 1/n when one party has it all; 1 when every value is 0 (all equal)."""
    v = np.asarray(values, dtype=np.float64)
    squares = float((v * v).sum())
    return float(v.sum() ** 2 / (v.size * squares)) if squares > 0 else 1.0


def spread_stats(values: list[float], weights: list[int]) -> dict[str, float]:
    """mean, weighted mean, std (population), worst 10% and best 10% (means of the
    ceil(10%) lowest / highest values, at least one), the worst value and Jain's
    fairness index (:func:`jain_index`)."""
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if v.size == 0:
        return {}
    k = max(1, math.ceil(0.1 * v.size))
    order = np.sort(v)
    return {
        "mean": float(v.mean()),
        "wmean": float((v * w).sum() / w.sum()) if w.sum() > 0 else float("nan"),
        "std": float(v.std()),
        "worst10": float(order[:k].mean()),
        "best10": float(order[-k:].mean()),
        "worst": float(order[0]),
        "jain": jain_index(v),
    }


def summarise(scores: list[PartyScore]) -> dict[str, float]:
    """The ``metrics.jsonl`` entries of a round's scores: ``<mode>_accuracy_mean`` etc.,
    ``holdout_<mode>_...`` for the held-out parties."""
    out: dict[str, float] = {}
    for mode in MODES:
        for held in (False, True):
            group = [s for s in scores if s.mode == mode and s.holdout == held]
            if not group:
                continue
            prefix = f"holdout_{mode}" if held else mode
            n = [s.n_test for s in group]
            for metric in ("accuracy", "f1_macro"):
                for k, v in spread_stats([getattr(s, metric) for s in group], n).items():
                    out[f"{prefix}_{metric}_{k}"] = v
            out[f"{prefix}_loss_wmean"] = spread_stats([s.loss for s in group], n)["wmean"]
            out[f"{prefix}_parties"] = len(group)
    return out


def accuracy_and_macro_f1(cms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro F1 of each of a stack of (K, K) confusion matrices, as
    :func:`fedsim.measures.metrics.classification_metrics` computes them for one (macro over the
    classes present in the labels or the predictions; 0 where a ratio is 0/0)."""
    cms = np.asarray(cms, dtype=np.float64)
    tp = np.diagonal(cms, axis1=1, axis2=2)
    pred = cms.sum(axis=1)
    true = cms.sum(axis=2)
    n = true.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred > 0, tp / pred, 0.0)
        recall = np.where(true > 0, tp / true, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        present = (true + pred) > 0
        macro = np.where(present.any(axis=1), (f1 * present).sum(axis=1) / present.sum(axis=1), 0.0)
        acc = np.where(n > 0, tp.sum(axis=1) / n, 0.0)
    return acc, macro


def eval_cohort(parties: list[int], holdout: list[int], k: int, seed: int) -> list[int]:
    """The parties evaluated: all of them when ``k`` is 0 or covers them; else ``k``
    training parties and a proportional number (at least one) of held-out parties,
    drawn once from (seed, "local-eval")."""
    train = [p for p in parties if p not in set(holdout)]
    if k == 0 or k >= len(parties):
        return sorted(parties)
    rng = np.random.default_rng(derive(seed, "local-eval"))
    chosen = list(rng.choice(train, size=min(k, len(train)), replace=False))
    if holdout:
        kh = min(len(holdout), max(1, round(k * len(holdout) / max(1, len(train)))))
        chosen += list(rng.choice(holdout, size=kh, replace=False))
    return sorted(int(p) for p in chosen)


class PartyEvaluator:
    """Evaluates each party of the cohort on its own test data (see module doc)."""

    def __init__(self, exp: Experiment, device: torch.device, client_state: ClientStateStore) -> None:
        cfg = self.cfg = exp.cfg
        self.exp, self.device, self.client_state = exp, device, client_state
        self.local = exp.local_test
        self.algo = strategies.get(cfg.strategy.name)
        b = exp.bundle
        self.num_classes = b.num_classes
        self.x_src, self.y_src = (
            (b.x_train, b.y_train) if self.local and self.local.source == "train" else (b.x_test, b.y_test)
        )
        seed_torch(derive(cfg.seed, "party-eval-model"))
        self.model = build_model(cfg.model, b.input_shape, b.num_classes).to(device)
        self.has_bn = has_batchnorm(self.model)
        self.criterion: Criterion = make_criterion(cfg.train)
        self.holdout = set(exp.holdout)
        self.parties = eval_cohort(list(range(cfg.partition.n_parties)), exp.holdout, cfg.eval.local_parties, cfg.seed)
        self.modes = ["local"]
        if self.algo.personal:
            self.modes.append("personal")
            remember_writes()  # every party's state is read back each evaluation
        if cfg.eval.finetune_epochs > 0:
            self.modes.append("finetune")
        self.batched = device.type == "cuda" and not any(isinstance(m, nn.RNNBase) for m in self.model.modules())

    @property
    def enabled(self) -> bool:
        return self.local is not None

    # ------------------------------------------------------------------ inputs
    def _test_indices(self, party: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.local.indices.get(party, np.zeros(0, np.int64)), dtype=np.int64))

    def _batches(self, party: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The party's test inputs (normalised, its feature noise from (seed, party)) in
        batches of ``eval.batch_size``, on the device."""
        idx = self._test_indices(party)
        view = party_view(self.exp, self.x_src, self.y_src, idx, party, train=False)
        gen = torch_generator(self.cfg.seed, "local-test-noise", party) if view.noise > 0 else None
        for chunk in torch.split(idx, self.cfg.eval.batch_size):
            xb, yb = view.batch(chunk, gen, train=False)
            yield xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)

    def _scores(self, parties: list[int], mode: str, loss: np.ndarray, cms: np.ndarray) -> list[PartyScore]:
        """The scores of parties with test data, from their loss sums and (P, K, K)
        confusion matrices; parties without test samples are left out."""
        acc, f1 = accuracy_and_macro_f1(cms)
        n = cms.sum(axis=(1, 2))
        return [
            PartyScore(p, mode, p in self.holdout, int(n[i]), float(acc[i]), float(loss[i] / n[i]), float(f1[i]))
            for i, p in enumerate(parties)
            if n[i] > 0
        ]

    def _accumulate(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss sum, flat confusion counts) of one batch."""
        loss = self.criterion(logits.float(), y).double() * y.numel()
        c = self.num_classes
        return loss, torch.bincount(y * c + logits.argmax(dim=1), minlength=c * c)

    # ------------------------------------------------------------------- modes
    @torch.inference_mode()
    def _pooled(self, state: Mapping[str, torch.Tensor], parties: list[int], mode: str) -> list[PartyScore]:
        """One model on every party's test data: the parties' batches are packed into
        batches of ``eval.batch_size`` and the predictions split back by party."""
        self.model.load_state_dict(state)
        self.model.eval()
        c2 = self.num_classes * self.num_classes
        loss = torch.zeros(len(parties), dtype=torch.float64, device=self.device)
        cms = torch.zeros(len(parties) * c2, dtype=torch.int64, device=self.device)
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        slots: list[int] = []
        held = 0

        def flush() -> None:
            if not xs:
                return
            logits = self.model(torch.cat(xs)).float()
            y = torch.cat(ys)
            start = 0
            for slot, xb in zip(slots, xs):
                n = xb.shape[0]
                part_loss, counts = self._accumulate(logits[start : start + n], y[start : start + n])
                loss[slot] += part_loss
                cms[slot * c2 : (slot + 1) * c2] += counts
                start += n
            xs.clear()
            ys.clear()
            slots.clear()

        for slot, party in enumerate(parties):
            for xb, yb in self._batches(party):
                xs.append(xb)
                ys.append(yb)
                slots.append(slot)
                held += yb.numel()
                if held >= self.cfg.eval.batch_size:
                    flush()
                    held = 0
        flush()
        cm = cms.view(len(parties), self.num_classes, self.num_classes).cpu().numpy()
        return self._scores(parties, mode, loss.cpu().numpy(), cm)

    @torch.inference_mode()
    def _one(self, party: int, state: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss sum, flat confusion counts) of the party's own model on its test data
        (the CPU path)."""
        self.model.load_state_dict(state)
        self.model.eval()
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        cm = torch.zeros(self.num_classes**2, dtype=torch.int64, device=self.device)
        for xb, yb in self._batches(party):
            part_loss, counts = self._accumulate(self.model(xb), yb)
            loss += part_loss
            cm += counts
        return loss, cm

    @torch.inference_mode()
    def _stacked(self, parties: list[int], states: list[Mapping[str, torch.Tensor]], mode: str) -> list[PartyScore]:
        """The parties' own models as one vmapped pass (the GPU path): parameters and
        buffers stacked along a leading party dimension, test batches padded."""
        self.model.eval()
        stacked = {k: torch.stack([s[k].to(self.device) for s in states]) for k in states[0]}

        def forward(params: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.model, params, (x,))

        batched_forward = vmap(forward)
        per_party = [list(self._batches(p)) for p in parties]
        c2 = self.num_classes**2
        loss = torch.zeros(len(parties), dtype=torch.float64, device=self.device)
        cms = torch.zeros(len(parties), c2, dtype=torch.int64, device=self.device)
        for step in range(max(len(b) for b in per_party)):
            live = [i for i, b in enumerate(per_party) if step < len(b)]
            xs = [per_party[i][step][0] for i in live]
            size = max(x.shape[0] for x in xs)
            x = torch.stack([torch.cat([xb, xb.new_zeros((size - xb.shape[0], *xb.shape[1:]))]) for xb in xs])
            params = {k: v[live] for k, v in stacked.items()} if len(live) < len(parties) else stacked
            logits = batched_forward(params, x)
            for j, i in enumerate(live):
                yb = per_party[i][step][1]
                part_loss, counts = self._accumulate(logits[j, : yb.numel()], yb)
                loss[i] += part_loss
                cms[i] += counts
        cm = cms.view(len(parties), self.num_classes, self.num_classes).cpu().numpy()
        return self._scores(parties, mode, loss.cpu().numpy(), cm)

    def _own_models(
        self, parties: list[int], make: Callable[[int], Mapping[str, torch.Tensor]], mode: str
    ) -> list[PartyScore]:
        if self.batched:
            out: list[PartyScore] = []
            for start in range(0, len(parties), PARTIES_PER_CHUNK):
                chunk = parties[start : start + PARTIES_PER_CHUNK]
                out += self._stacked(chunk, [make(p) for p in chunk], mode)
            return out
        results = [self._one(p, make(p)) for p in parties]
        loss = torch.stack([r[0] for r in results]).cpu().numpy()
        cms = torch.stack([r[1] for r in results]).view(len(parties), self.num_classes, self.num_classes)
        return self._scores(parties, mode, loss, cms.cpu().numpy())

    def finetune(self, party: int, server_round: int, state: Mapping[str, torch.Tensor], epochs: int) -> dict:
        """``state`` trained for ``epochs`` local epochs on the party's training data with
        ``train.*`` (batches from (seed, "finetune", round, party))."""
        out = {k: v.detach().clone() for k, v in state.items()}
        if epochs <= 0:
            return out
        cfg, device = self.cfg, self.device
        train_idx, _ = self.exp.split(party)
        if train_idx.size == 0:
            return out
        x = on_device(self.exp.bundle.x_train, device)
        y = on_device(self.exp.bundle.y_train, device)
        data = party_view(self.exp, x, y, torch.from_numpy(train_idx).to(device), party, train=True)
        gen = torch_generator(cfg.seed, "finetune", server_round, party, device=device)
        seed_torch(derive(cfg.seed, "finetune-torch", server_round, party), device)
        self.model.load_state_dict(state)
        trainer = LocalTrainer(data, cfg.train, gen, device, self.criterion, self.has_bn)

        def loss(xb, yb):
            logits = self.model(xb)
            return self.criterion(logits, yb), logits

        trainer.run(self.model, loss, epochs)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # -------------------------------------------------------------------- call
    def __call__(self, server_round: int, global_state: Mapping[str, torch.Tensor]) -> tuple[dict, list[dict]]:
        """(the round's ``metrics.jsonl`` entries, its ``parties.jsonl`` rows)."""
        if not self.enabled:
            return {}, []
        parties = self.parties
        scores = self._pooled(global_state, parties, "local")
        if "personal" in self.modes:
            params = self.cfg.strategy

            def personal(p: int) -> Mapping[str, torch.Tensor]:
                def tune(state, epochs):
                    return self.finetune(p, server_round, state, epochs)

                own = self.algo.personalize(params, global_state, self.client_state.load(p), tune)
                return own if own is not None else global_state

            scores += self._own_models(parties, personal, "personal")
        if "finetune" in self.modes:
            epochs = self.cfg.eval.finetune_epochs
            scores += self._own_models(
                parties, lambda p: self.finetune(p, server_round, global_state, epochs), "finetune"
            )
        return summarise(scores), [s.row(server_round) for s in scores]
