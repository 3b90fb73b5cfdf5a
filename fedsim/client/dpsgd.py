"""DP-SGD on one party (Abadi et al. 2016, "Deep Learning with Differential Privacy"), with Opacus.

Each local step of party k (n_k training samples, batch size B):

1. **Poisson batch**: every sample joins with probability q_k = 1 / ceil(n_k / B)
   (Opacus's ``UniformWithReplacementSampler``, the rate ``make_private`` gives a
   loader of batch size B), ceil(n_k / B) steps an epoch;
2. **per-sample gradients** of the task loss (Opacus's ``GradSampleModule`` hooks),
   each clipped to norm ``privacy.max_grad_norm`` (C), summed, plus N(0, sigma^2 C^2 I),
   divided by the expected batch size q_k n_k (Opacus's ``DPOptimizer``);
3. the rule's **parameter penalty** (FedProx's mu/2 ||w - w_global||^2: it reads no
   data, so adding its gradient after the noise costs no privacy);
4. the optimiser's step (SGD with momentum, Adam, ...).

The batch draws and the noise come from generators seeded with (seed, round, party),
so a party's training repeats and resumes exactly on CPU. Opacus's privacy engine is
not used: fedsim keeps its own data path (index batches of the tensors held once per
process) and accounts on the server (:mod:`fedsim.privacy.run`), where every party's steps are known.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from torch import nn

from fedsim.client.training import PartyData, TrainStats, make_optimizer
from fedsim.errors import ConfigError
from fedsim.privacy.accounting import INSTALL
from fedsim.privacy.dpsgd import sample_rate, steps_per_epoch


def _opacus():
    try:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler
    except ImportError as exc:
        raise ConfigError(f"privacy.mode 'dpsgd' trains with Opacus: {INSTALL}") from exc
    return GradSampleModule, DPOptimizer, UniformWithReplacementSampler


def train_dpsgd(
    model: nn.Module,
    rule,  # strategies.ClientRule (batchable: task loss + functional_penalty)
    data: PartyData,
    cfg,  # TrainConfig
    epochs: int,
    generator: torch.Generator,
    device: torch.device,
    noise_multiplier: float,
    max_grad_norm: float,
    sample_generator: torch.Generator,
    noise_generator: torch.Generator,
    max_steps: int | None = None,
) -> TrainStats:
    """One party's round of DP-SGD (module docstring); ``generator`` augments, the
    other two draw the Poisson batches (CPU) and the noise (the device)."""
    GradSampleModule, DPOptimizer, Sampler = _opacus()
    t0 = time.perf_counter()
    n = len(data)
    q = sample_rate(n, cfg.batch_size)
    total = epochs * steps_per_epoch(n, cfg.batch_size)
    if max_steps is not None:
        total = min(total, max_steps)
    model.train()
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
    params = [p for p in model.parameters() if p.requires_grad]
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    optimizer = DPOptimizer(
        make_optimizer(params, cfg),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=max(1, int(n * q)),
        loss_reduction="mean",
        generator=noise_generator,
    )
    rule.on_train_begin()
    step = _DPStep(gsm, optimizer, rule, data, generator, params, names)
    try:
        with warnings.catch_warnings():
            # Opacus's hooks on the first layer fire for the module outputs (the input needs no grad); torch warns
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            for batch in (
                Sampler(num_samples=n, sample_rate=q, generator=sample_generator, steps=total) if total else []
            ):
                step(batch)
    finally:
        gsm._close()  # Opacus's hooks off the shared model (the next party, evaluation)
        for p in params:
            p.grad = None
    return step.stats(n, epochs, time.perf_counter() - t0)


class _DPStep:
    """One DP-SGD step on a Poisson batch of positions, and the task loss and hits of
    every step (kept as tensors: reduced once at the end)."""

    def __init__(
        self,
        gsm: nn.Module,
        optimizer: Any,  # opacus.optimizers.DPOptimizer
        rule: Any,
        data: PartyData,
        generator: torch.Generator,
        params: list[nn.Parameter],
        names: list[str],
    ) -> None:
        self.gsm, self.optimizer, self.rule, self.data, self.generator = gsm, optimizer, rule, data, generator
        self.params, self.names = params, names
        # the rule's context as its on_train_begin left it
        self.criterion = rule.ctx.criterion
        self.hparams, self.global_weights = rule.ctx.params, rule.ctx.global_state
        self.losses: list[torch.Tensor] = []
        self.hits: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.steps = 0

    def __call__(self, batch: list[int]) -> None:
        """Per-sample gradients of the batch's task loss; then clip, sum, noise and scale
        (Opacus), add the rule's penalty gradient, and step."""
        self.optimizer.zero_grad(set_to_none=True)
        if batch:
            data = self.data
            pos = torch.tensor(batch, dtype=torch.int64, device=data.indices.device)
            xb, yb = data.batch(data.indices[pos], self.generator, train=True)
            logits = self.gsm(xb)
            loss = self.criterion(logits, yb)
            loss.backward()
            self.losses.append(loss.detach() * yb.numel())
            self.hits.append(logits.detach().argmax(dim=1) == yb)
            self.sizes.append(yb.numel())
        else:  # an empty Poisson batch still takes a noised step
            for p in self.params:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        if self.optimizer.pre_step():  # clip, sum, noise, scale (p.grad)
            self._add_penalty_grad()
            self.optimizer.original_optimizer.step()
        self.steps += 1

    def _add_penalty_grad(self) -> None:
        """The rule's parameter penalty (FedProx's proximal term): it reads no data, so its
        gradient goes in after the noise at no privacy cost."""
        penalty = self.rule.functional_penalty(self.hparams, dict(zip(self.names, self.params)), self.global_weights)
        if penalty is None:
            return
        for p, g in zip(self.params, torch.autograd.grad(penalty, self.params, allow_unused=True)):
            if g is not None:
                p.grad.add_(g)

    def stats(self, n: int, epochs: int, seconds: float) -> TrainStats:
        """The round's mean task loss and accuracy over the samples seen (NaN for none)."""
        seen = sum(self.sizes)
        if seen:
            mean_loss = float(torch.stack(self.losses).double().sum()) / seen
            acc = float(torch.cat(self.hits).sum()) / seen
        else:
            mean_loss = acc = float("nan")
        return TrainStats(n, self.steps, epochs, mean_loss, acc, seconds, mean_loss)
