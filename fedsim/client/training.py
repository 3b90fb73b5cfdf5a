"""The local trainer: epochs of mini-batch steps on one party's data, with rule hooks.

Data stay as tensors (docs/architecture.md, decision 4): a party is an index tensor into the
dataset held once per process (and once per device); a mini-batch is made by
indexing, then normalised, augmented and noised as a whole batch on the training
device. All randomness of one party's round comes from one ``torch.Generator``
seeded from (seed, round, party).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.data.transforms import add_feature_noise, augment_batch, to_float
from fedsim.schema.sections import TrainConfig

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

if TYPE_CHECKING:  # the run's inputs type a party's view; importing them at run time is not needed
    from fedsim.inputs.run_inputs import Experiment


# ------------------------------------------------------------------------ losses


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection"), mean over the batch.

    ``FL = -alpha_t (1 - p_t)^gamma log p_t`` with ``p_t`` the predicted probability
    of the true class (softmax over the logits; one logit column means a binary
    sigmoid output). ``alpha``: for two classes (or one logit) the weight of class 1,
    ``1 - alpha`` that of class 0 (RetinaNet's convention); for more classes a uniform
    factor. ``gamma = 0`` and no alpha give cross-entropy.
    """
    if logits.dim() == 2 and logits.shape[1] == 1:
        z = logits[:, 0]
        tf = target.to(z.dtype)
        log_pt = -F.binary_cross_entropy_with_logits(z, tf, reduction="none")
        binary = True
    else:
        log_p = F.log_softmax(logits.float(), dim=1)
        log_pt = log_p.gather(1, target.view(-1, 1)).squeeze(1)
        binary = logits.shape[1] == 2
    pt = log_pt.exp()
    loss = -((1 - pt).clamp_min(0) ** gamma) * log_pt
    if alpha is not None:
        if binary:
            alpha_t = torch.where(target == 1, torch.full_like(pt, alpha), torch.full_like(pt, 1 - alpha))
        else:
            alpha_t = torch.full_like(pt, alpha)
        loss = alpha_t * loss
    return loss.mean()


def make_criterion(cfg: TrainConfig) -> Criterion:
    if cfg.loss == "ce":
        return nn.functional.cross_entropy
    if cfg.loss == "focal":
        gamma, alpha = cfg.focal_gamma, cfg.focal_alpha
        return lambda logits, y: focal_loss(logits, y, gamma, alpha)
    raise ValueError(f"unknown loss '{cfg.loss}'")


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer '{cfg.optimizer}'")


_WALKED: weakref.WeakKeyDictionary[nn.Module, tuple[list[nn.Module], list[nn.Parameter]]] = weakref.WeakKeyDictionary()


def _walked(model: nn.Module) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """The model's modules and parameters, listed once per model: walking them each client
    was 4% of the cross-device round (``benchmarks/peers.py`` 1000x10: ``model.train()``
    2.5%, ``model.parameters()`` 1.5%). It assumes what fedsim never does: a model whose
    modules or parameters are replaced after it is built (no rule does)."""
    hit = _WALKED.get(model)
    if hit is None:
        hit = _WALKED[model] = (list(model.modules()), list(model.parameters()))
    return hit


def train_mode(model: nn.Module) -> None:
    """``model.train()`` unless every module is in training mode already (train() sets an
    attribute on each module through nn.Module's slow __setattr__)."""
    if not all(m.training for m in _walked(model)[0]):
        model.train()


def parameters(model: nn.Module) -> list[nn.Parameter]:
    """``list(model.parameters())``, listed once per model."""
    return _walked(model)[1]


class PlainSGD:
    """``torch.optim.SGD(params, lr)`` without momentum or weight decay: each step is its
    ``param.add_(grad, alpha=-lr)`` (the same kernel, bit for bit), without torch.optim's
    per-step wrappers (a profiler record, a dynamo guard, a grad-mode switch, the
    functional dispatch): they were 6% of the cross-device round, four times the update
    itself (``benchmarks/peers.py`` 1000x10, simple-cnn, one step of 10 images a client).
    A parameter without a gradient is left as it is, as SGD leaves it."""

    def __init__(self, params: Iterable[nn.Parameter] | list[nn.Parameter], lr: float) -> None:
        self.params = params if isinstance(params, list) else list(params)
        self.lr = float(lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)


def local_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer | PlainSGD:
    """The trainer's optimizer: :class:`PlainSGD` for ``train.optimizer: sgd`` with no
    momentum and no weight decay (the default), else :func:`make_optimizer`'s."""
    if cfg.optimizer == "sgd" and cfg.momentum == 0 and cfg.weight_decay == 0:
        return PlainSGD(params, cfg.lr)
    return make_optimizer(params, cfg)


# -------------------------------------------------------------------------- data


@dataclass
class PartyData:
    """One party's view of a dataset that lives once on the device."""

    x: torch.Tensor  # the whole dataset (uint8 images or float features), on the device
    y: torch.Tensor  # int64 labels, on the device
    indices: torch.Tensor  # int64 indices of the party's samples, on the device
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    augment: bool = False
    noise: float = 0.0  # feature-noise skew sigma_i of this party

    def __len__(self) -> int:
        return int(self.indices.numel())

    def batch(
        self, idx: torch.Tensor, generator: torch.Generator | None, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (augmented, noised) inputs and labels of dataset rows ``idx``."""
        xb = self.x[idx]
        if train and self.augment and generator is not None:
            # on the raw batch, so the crop's padding is black as in torchvision's pipeline
            xb = augment_batch(xb, generator)
        xb = to_float(xb, self.mean, self.std)
        if self.noise > 0 and generator is not None:
            xb = add_feature_noise(xb, self.noise, generator)
        return xb, self.y[idx]


def epoch_batches(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device, drop_singleton: bool
) -> list[torch.Tensor]:
    """Positions 0..n-1 shuffled and cut into batches.

    The trailing partial batch is kept, except when it holds a single sample and the
    model has BatchNorm (which cannot normalise one sample in training mode).
    """
    perm = torch.randperm(n, generator=generator, device=generator.device).to(device)
    chunks = list(torch.split(perm, batch_size))
    if drop_singleton and len(chunks) > 1 and chunks[-1].numel() == 1:
        chunks.pop()
    return chunks


def steps_per_epoch(n: int, batch_size: int, drop_singleton: bool) -> int:
    k = math.ceil(n / batch_size) if n else 0
    if drop_singleton and k > 1 and n % batch_size == 1:
        k -= 1
    return k


# ---------------------------------------------------------------------- training


@dataclass
class TrainStats:
    num_examples: int
    steps: int
    epochs: int
    #: mean task loss (the criterion on the logits) over the samples seen
    loss: float
    accuracy: float
    seconds: float
    #: mean of what was minimised: the task loss plus the algorithm's terms
    #: (FedProx's proximal term, FedDyn's and FedDC's linear terms, which can be negative)
    objective: float = float("nan")


def batch_positions(
    n: int,
    cfg: TrainConfig,
    epochs: int,
    generator: torch.Generator,
    device: torch.device,
    max_steps: int | None = None,
    has_bn: bool = False,
) -> Iterator[torch.Tensor]:
    """The schedule of one party's round: per step, the positions (0..n-1) of its batch.

    The one place that decides data order: the sequential trainer and the batched
    (vmap) engine both read it, so both see the same batches.
    """
    steps = 0
    for _ in range(epochs):
        for pos in epoch_batches(n, cfg.batch_size, generator, device, drop_singleton=has_bn):
            if max_steps is not None and steps >= max_steps:
                return
            yield pos
            steps += 1


def batch_stream(
    data: PartyData, generator: torch.Generator, positions: Iterable[torch.Tensor]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The mini-batches ``(x, y)`` of one party's round at ``positions`` (its
    :func:`batch_positions` schedule), in order, augmented and noised with ``generator``."""
    for pos in positions:
        yield data.batch(data.indices[pos], generator, train=True)


@dataclass
class LocalTrainer:
    """One party's round of local training: its data, its random generator, ``train.*``.

    :meth:`run` is the mini-batch loop; a client rule runs it once (the default) or
    several times (FedRep's head then body, Ditto's global then personal model), each
    run drawing its shuffles from the party's generator, so every run repeats exactly.
    """

    data: PartyData
    cfg: TrainConfig
    generator: torch.Generator
    device: torch.device
    criterion: Criterion
    has_bn: bool = False

    def run(
        self,
        model: nn.Module,
        loss: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        epochs: int,
        params: Iterable[nn.Parameter] | None = None,
        after_backward: Callable[[], None] | None = None,
        max_steps: int | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> TrainStats:
        """``epochs`` epochs (at most ``max_steps`` steps) of ``loss(x, y) -> (loss, logits)``
        minimised over ``params`` (default: all of ``model``'s) by ``train.optimizer``.

        Returns the mean task loss (the criterion alone: comparable across algorithms),
        the mean objective and the accuracy over the samples seen.
        """
        train_mode(model)
        if optimizer is None:
            optimizer = local_optimizer(parameters(model) if params is None else list(params), self.cfg)
        amp = self.cfg.amp and self.device.type == "cuda"

        def step(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=amp):
                objective, logits = loss(xb, yb)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            if after_backward is not None:
                after_backward()
            optimizer.step()
            return objective, logits

        # a plain rule's objective is the criterion on the logits, as the loop would
        # compute it again (without autocast: the same kernel on the same logits)
        task_loss = getattr(loss, "is_task_loss", False) and not amp
        return self.loop(step, epochs, max_steps, objective_is_loss=task_loss)

    def loop(
        self,
        step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        epochs: int,
        max_steps: int | None = None,
        objective_is_loss: bool = False,
    ) -> TrainStats:
        """The party's mini-batches of ``epochs`` epochs, each given to ``step(x, y) ->
        (objective, logits)``, which does the update itself (pFedMe's inner solver).
        ``objective_is_loss``: the objective is the criterion on the logits."""
        t0 = time.perf_counter()
        # per-step values are kept as tensors and reduced once at the end: no
        # synchronisation per step, and two tensor ops per step instead of six
        objectives: list[torch.Tensor] = []
        losses: list[torch.Tensor] = []
        logits_seen: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        sizes: list[int] = []
        positions = batch_positions(
            len(self.data), self.cfg, epochs, self.generator, self.device, max_steps, self.has_bn
        )
        for xb, yb in batch_stream(self.data, self.generator, positions):
            objective, logits = step(xb, yb)
            objectives.append(objective.detach())
            logits_seen.append(logits.detach())
            labels.append(yb)
            if not objective_is_loss:
                with torch.no_grad():
                    losses.append(self.criterion(logits_seen[-1].float(), yb))
            sizes.append(yb.numel())
        seen = sum(sizes)
        if not seen:
            nan = float("nan")
            return TrainStats(len(self.data), 0, epochs, nan, nan, time.perf_counter() - t0, nan)
        # the per-step values reduced once, each read back in one transfer and summed in
        # float64 in Python (a client of one step paid ~14 tensor ops here, and 4 a step
        # for its accuracy: benchmarks/peers.py 1000x10)
        obj = torch.stack(objectives).tolist()
        loss = torch.stack(losses).tolist() if losses else obj
        mean_objective = math.fsum(v * n for v, n in zip(obj, sizes)) / seen
        mean_loss = math.fsum(v * n for v, n in zip(loss, sizes)) / seen
        hits = (_cat(logits_seen).argmax(dim=1) == _cat(labels)).sum()
        acc = int(hits) / seen
        return TrainStats(len(self.data), len(sizes), epochs, mean_loss, acc, time.perf_counter() - t0, mean_objective)


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def train_local(
    model: nn.Module,
    rule,  # strategies.ClientRule
    data: PartyData,
    cfg: TrainConfig,
    epochs: int,
    generator: torch.Generator,
    device: torch.device,
    max_steps: int | None = None,
    has_bn: bool = False,
) -> TrainStats:
    """One party's local training under its algorithm's rule.

    The rule gets a :class:`LocalTrainer` in ``rule.ctx.trainer``, then
    ``on_train_begin()`` and ``fit(epochs, max_steps)``: by default one run of the
    loop minimising ``rule.loss`` (the task loss plus the algorithm's terms) over all
    weights, with ``rule.on_after_backward`` between backward and step.
    """
    rule.ctx.trainer = LocalTrainer(data, cfg, generator, device, rule.ctx.criterion, has_bn)
    rule.on_train_begin()
    return rule.fit(epochs, max_steps)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    num_classes: int,
    batch_size: int,
    device: torch.device,
    criterion: Criterion = nn.functional.cross_entropy,
    amp: bool = False,
) -> tuple[float, torch.Tensor]:
    """Mean loss and the (K, K) confusion matrix of ``model`` on (x, y).

    ``x``/``y`` may live on the CPU: batches move to ``device`` one at a time.
    """
    model.eval()
    n = int(y.numel())
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    cm = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    use_amp = amp and device.type == "cuda"
    for start in range(0, n, batch_size):
        xb = to_float(x[start : start + batch_size].to(device, non_blocking=True), mean, std)
        yb = y[start : start + batch_size].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(xb)
        loss_sum += criterion(logits.float(), yb).double() * yb.numel()
        cm += torch.bincount(yb * num_classes + logits.argmax(dim=1), minlength=num_classes * num_classes)
    return (float(loss_sum) / n if n else float("nan")), cm.view(num_classes, num_classes).cpu()


@torch.inference_mode()
def sample_losses(
    model: nn.Module,
    data: PartyData,
    batch_size: int,
    device: torch.device,
    criterion: Criterion = nn.functional.cross_entropy,
) -> tuple[float, float]:
    """(mean, sqrt of the mean square) of ``model``'s per-sample losses on ``data``'s
    samples, unaugmented: F_k(w) of q-FFL and Power-of-Choice, and Oort's statistical
    utility sqrt(1/|B| sum Loss(k)^2) (one forward pass over the party's training data)."""
    model.eval()
    idx = data.indices
    n = int(idx.numel())
    if n == 0:
        return float("nan"), float("nan")
    total = torch.zeros((), device=device, dtype=torch.float64)
    squares = torch.zeros((), device=device, dtype=torch.float64)
    for start in range(0, n, batch_size):
        xb, yb = data.batch(idx[start : start + batch_size], None, train=False)  # the party's data, unaugmented
        logits = model(xb).float()
        if criterion is nn.functional.cross_entropy:
            each = nn.functional.cross_entropy(logits, yb, reduction="none").double()
        else:  # a criterion that only gives the batch mean: one sample at a time
            each = torch.stack([criterion(logits[i : i + 1], yb[i : i + 1]) for i in range(yb.numel())]).double()
        total += each.sum()
        squares += (each * each).sum()
    return float(total) / n, math.sqrt(float(squares) / n)


def party_view(
    exp: Experiment, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor, party: int, train: bool
) -> PartyData:
    """A party's samples ``indices`` of (x, y) as the trainer sees them (its feature
    noise; augmentation when training)."""
    b, cfg = exp.bundle, exp.cfg
    return PartyData(
        x=x,
        y=y,
        indices=indices,
        mean=b.mean,
        std=b.std,
        augment=b.augment and train,
        noise=float(exp.noise_levels[party]) if cfg.data.feature_noise > 0 else 0.0,
    )
