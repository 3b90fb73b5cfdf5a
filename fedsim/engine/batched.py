"""Batched client execution: a cohort trained in lockstep with ``torch.func``.

At FL batch sizes a GPU is mostly idle while one client trains. Here the clients of a
round share every kernel launch: their parameters are stacked along a new leading
dimension and one ``vmap(grad_and_value(loss))`` over ``functional_call`` computes
every client's gradients at once; a functional SGD (momentum, weight decay: exactly
``torch.optim.SGD``'s update) steps each client's own parameters and momentum.

Each client reads the same mini-batches as on the sequential engine: its batches come
from :func:`fedsim.client.training.batch_stream` with its own generator, seeded from (seed,
round, party). Clients with fewer samples or fewer local steps (``train.epochs`` ranges,
stragglers) finish earlier: a per-client mask freezes them, and a short last batch is
padded with zero-weight samples, so each client's loss is the mean over its real
samples. The updates equal the sequential engine's up to floating-point rounding.

Where the lockstep form does not hold, the cohort runs one client at a time and the
reason is logged once: BatchNorm (running statistics are buffers updated in place;
the ResNets with `model.norm: group` have none and batch),
dropout (masks would come from another generator), a recurrent layer (the character
LSTM: torch.func has no batching rule for the fused LSTM kernel, so vmap would run it
client by client anyway), optimisers other than SGD, a loss other than cross-entropy,
or a client rule with gradient hooks or state (SCAFFOLD, MOON, FedBN). Token sequences
(int64) otherwise batch like any input: they pass through unnormalised. ``engine.batch_clients: auto`` batches on CUDA only: on a CPU, vmap was
slower than running the clients one after another.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from flwr.app import Context, Message, MessageType
from torch.func import functional_call, grad_and_value, vmap

from fedsim.client.app import runtime_for
from fedsim.client.training import TrainStats, batch_positions, batch_stream
from fedsim.data.transforms import to_float
from fedsim.engine.executors import SequentialExecutor, error_reply
from fedsim.privacy.mods import why_not_batched as why_not_private

log = logging.getLogger(__name__)

#: clients per vmapped chunk: bounds memory (stacked parameters, activations)
MAX_CLIENTS_PER_CHUNK = 256


def why_not_batched(rt, mode: str) -> str | None:
    """None when the cohort can train in lockstep, else the reason it cannot."""
    cfg = rt.cfg
    if mode == "off":
        return "engine.batch_clients is off"
    if mode == "auto" and rt.device.type != "cuda":
        return "engine.batch_clients=auto batches on CUDA only (on a CPU vmap is slower than one client at a time for convolutional models; set it on for tiny ones)"
    private = why_not_private(cfg)
    if private is not None:
        return private
    rule = rt.algo.Rule
    if not rule.batchable:
        return f"strategy '{cfg.strategy.name}' has a client rule with gradient hooks or per-party state"
    if cfg.train.optimizer != "sgd":
        return f"the batched path implements SGD only (train.optimizer={cfg.train.optimizer})"
    if cfg.train.loss != "ce":
        return f"the batched path implements cross-entropy only (train.loss={cfg.train.loss})"
    if rt.has_bn:
        return "the model has BatchNorm, whose running statistics vmap cannot update per client (resnet*: model.norm=group batches)"
    if cfg.model.dropout > 0:
        return "model.dropout > 0: dropout masks would differ from the sequential engine's"
    if any(isinstance(m, torch.nn.RNNBase) for m in rt.model.modules()):
        return "the model has a recurrent layer (nn.LSTM), for whose fused kernel torch.func.vmap has no batching rule"
    return None


class BatchedExecutor:
    """An executor for the local engine that trains a cohort in lockstep (see module doc)."""

    def __init__(self, client_app, settings, mode: str, timeout: float | None = None) -> None:
        self.fallback = SequentialExecutor(client_app, timeout)
        self.settings = settings
        self.mode = mode
        self._told = False

    def run(self, jobs: list[tuple[Message, Context]]) -> list[Message]:
        if not jobs or any(m.metadata.message_type != MessageType.TRAIN for m, _ in jobs):
            return self.fallback.run(jobs)
        rt = runtime_for(self.settings)
        reason = why_not_batched(rt, self.mode)
        if reason is not None:
            if not self._told:
                (log.warning if self.mode == "on" else log.info)("clients run one at a time: %s", reason)
                self._told = True
            return self.fallback.run(jobs)
        replies: list[Message] = []
        for start in range(0, len(jobs), MAX_CLIENTS_PER_CHUNK):
            chunk = jobs[start : start + MAX_CLIENTS_PER_CHUNK]
            try:
                replies.extend(train_cohort(rt, chunk))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                log.warning("CUDA out of memory training %d clients at once; this chunk runs one at a time", len(chunk))
                replies.extend(self.fallback.run(chunk))
        return replies

    def close(self) -> None:
        self.fallback.close()


def _sgd_step(params, grads, bufs, active, lr: float, momentum: float, wd: float) -> None:
    """torch.optim.SGD's update (no dampening, no Nesterov) on stacked client tensors.

    ``d = g + wd * p``; momentum ``buf = d`` at the first step, then
    ``buf = momentum * buf + d``; ``p = p - lr * buf``. Inactive clients keep both.
    """
    for name, p in params.items():
        mask = active.view(-1, *([1] * (p.dim() - 1)))
        d = grads[name].add(p, alpha=wd) if wd != 0 else grads[name]
        if momentum != 0:
            old = bufs.get(name)
            new = d.clone() if old is None else old.mul(momentum).add_(d)
            bufs[name] = new if old is None else torch.where(mask, new, old)
            d = bufs[name]
        params[name] = torch.where(mask, p.add(d, alpha=-lr), p)


def _positions(rt, r) -> Iterator[torch.Tensor]:
    """A client's batch schedule this round, as the sequential trainer draws it."""
    return batch_positions(len(r.data), rt.cfg.train, r.epochs, r.gen, rt.device, r.max_steps, rt.has_bn)


def _lockstep_batches(rt, rounds):
    """Per step: inputs (C, B, ...), labels and sample weights (C, B), active clients (C,).

    Without augmentation or feature noise a client's batches depend only on its
    shuffles, so its whole index plan is drawn up front (the same generator calls as
    the sequential trainer) and each step is one gather for the whole cohort.
    Otherwise each client's own :func:`batch_stream` produces its batch.
    """
    tc, device = rt.cfg.train, rt.device
    C, B = len(rounds), tc.batch_size
    if all(not r.data.augment and r.data.noise == 0 for r in rounds):
        plans = [[r.data.indices[pos] for pos in _positions(rt, r)] for r in rounds]
        T = max((len(p) for p in plans), default=0)
        # one scatter of every client's batches into a (C, T, B) plan, padded with
        # weight-0 slots (a Python loop of slice assignments cost ~20 ms a round at C = 100)
        lengths = torch.tensor([ix.numel() for plan in plans for ix in plan], dtype=torch.int64, device=device)
        slots = torch.tensor(
            [i * T + t for i, plan in enumerate(plans) for t in range(len(plan))], dtype=torch.int64, device=device
        )
        within = torch.arange(int(lengths.sum()), device=device) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        dest = torch.repeat_interleave(slots * B, lengths) + within
        idx = torch.zeros(C * T * B, dtype=torch.int64, device=device)
        w = torch.zeros(C * T * B, dtype=torch.float32, device=device)
        if dest.numel():
            idx[dest] = torch.cat([ix for plan in plans for ix in plan])
            w[dest] = 1.0
        idx, w = idx.view(C, T, B), w.view(C, T, B)
        n_steps = torch.tensor([len(p) for p in plans], device=device)
        b0 = rounds[0].data
        for t in range(T):
            flat = idx[:, t].reshape(-1)
            xs = to_float(rt.x[flat], b0.mean, b0.std)
            yield xs.view(C, B, *xs.shape[1:]), rt.y[flat].view(C, B), w[:, t], n_steps > t
        return
    streams = [batch_stream(r.data, r.gen, _positions(rt, r)) for r in rounds]
    active = [len(r.data) > 0 for r in rounds]
    in_shape = rt.x.shape[1:]
    while True:
        batch = [next(s, None) if a else None for s, a in zip(streams, active)]
        active = [b is not None for b in batch]
        if not any(active):
            return
        xs = torch.zeros((C, B, *in_shape), dtype=torch.float32, device=device)
        ys = torch.zeros((C, B), dtype=torch.int64, device=device)
        ws = torch.zeros((C, B), dtype=torch.float32, device=device)
        for i, b in enumerate(batch):
            if b is not None:
                n = b[1].numel()
                xs[i, :n], ys[i, :n], ws[i, :n] = b[0], b[1], 1.0
        yield xs, ys, ws, torch.tensor(active, device=device)


def train_cohort(rt, jobs: list[tuple[Message, Context]]) -> list[Message]:
    """Train ``jobs`` (train messages of one round) in lockstep; one reply per job."""
    replies: list[Message] = []
    rounds = []
    for msg, ctx in jobs:
        try:
            rounds.append(rt.prepare(msg, ctx))
        except Exception as exc:  # an injected fault, a bad message: that client fails alone
            replies.append(error_reply(msg, exc))
    if not rounds:
        return replies
    t0 = time.perf_counter()
    device, model, tc = rt.device, rt.model, rt.cfg.train
    model.train()
    # every prepare() loaded the same received weights into the model
    global_params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    C = len(rounds)
    params = {n: g.unsqueeze(0).repeat(C, *([1] * g.dim())) for n, g in global_params.items()}
    bufs: dict[str, torch.Tensor] = {}
    step_fn = _cohort_step(rt, buffers, global_params)
    totals = _Totals.zeros(C, device)
    amp = tc.amp and device.type == "cuda"
    for xs, ys, ws, act in _lockstep_batches(rt, rounds):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            grads, (objective, (loss, logits)) = step_fn(params, xs, ys, ws)
        _sgd_step(params, grads, bufs, act, tc.lr, tc.momentum, tc.weight_decay)
        totals.add(ys, ws, act, loss, objective, logits)
    elapsed = time.perf_counter() - t0
    keys = list(model.state_dict().keys())  # the reply keeps the model's key order
    for i, r in enumerate(rounds):
        state = OrderedDict((k, params[k][i].detach() if k in params else buffers[k]) for k in keys)
        replies.append(rt.finish(r, totals.stats(i, len(r.data), r.epochs, elapsed), state, keep=True))
    return replies


def _cohort_step(rt, buffers: dict[str, torch.Tensor], global_params: dict[str, torch.Tensor]) -> Callable:
    """Every client's gradients at once: ``vmap`` over the stacked parameters of the
    gradient of the weighted task loss plus the rule's penalty, with the task loss and
    the logits alongside."""
    model, rule, hparams = rt.model, rt.algo.Rule, rt.cfg.strategy

    def loss_fn(p, x, y, w):
        logits = functional_call(model, {**p, **buffers}, (x,))
        per_sample = F.cross_entropy(logits.float(), y, reduction="none")
        task = (per_sample * w).sum() / w.sum().clamp_min(1.0)
        loss = task
        penalty = rule.functional_penalty(hparams, p, global_params)
        if penalty is not None:
            loss = loss + penalty
        return loss, (task.detach(), logits.detach())

    return vmap(grad_and_value(loss_fn, has_aux=True), in_dims=(0, 0, 0, 0))


@dataclass
class _Totals:
    """Per client (C,): steps taken, real samples seen, and the sums of task loss,
    objective and correct predictions over them (float64)."""

    steps: torch.Tensor
    seen: torch.Tensor
    loss_sum: torch.Tensor
    objective_sum: torch.Tensor
    correct: torch.Tensor

    @classmethod
    def zeros(cls, C: int, device: torch.device) -> _Totals:
        """Nothing counted yet for ``C`` clients."""
        f64 = torch.float64
        return cls(
            torch.zeros(C, dtype=torch.int64, device=device),
            *(torch.zeros(C, dtype=f64, device=device) for _ in range(4)),
        )

    def add(
        self,
        ys: torch.Tensor,
        ws: torch.Tensor,
        act: torch.Tensor,
        loss: torch.Tensor,
        objective: torch.Tensor,
        logits: torch.Tensor,
    ) -> None:
        """One lockstep step: each active client's real samples (weight 1) count."""
        n_real = ws.sum(dim=1).double()
        self.steps += act.long()
        self.seen += n_real
        self.loss_sum += loss.detach().double() * n_real
        self.objective_sum += objective.detach().double() * n_real
        self.correct += ((logits.argmax(dim=-1) == ys).float() * ws).sum(dim=1).double()

    def stats(self, i: int, n: int, epochs: int, elapsed: float) -> TrainStats:
        """Client ``i``'s round: mean task loss, accuracy and objective over its samples (NaN for none)."""
        n_seen = float(self.seen[i])

        def mean(total: torch.Tensor) -> float:
            return float(total[i]) / n_seen if n_seen else float("nan")

        return TrainStats(
            n, int(self.steps[i]), epochs, mean(self.loss_sum), mean(self.correct), elapsed, mean(self.objective_sum)
        )
