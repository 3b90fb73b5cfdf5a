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
process) and accounts on the server (:mod:`.run`), where every party's steps are known.
"""

from __future__ import annotations

import math
import time
import warnings

import torch
from torch import nn

from fedsim.client.training import PartyData, TrainStats, make_optimizer
from fedsim.errors import ConfigError
from fedsim.privacy.accounting import INSTALL


def trains_with_dpsgd(cfg) -> bool:
    """Whether ``cfg``'s parties train with DP-SGD (``privacy.mode: dpsgd``) instead of
    the plain local training."""
    return cfg.privacy.mode == "dpsgd"


def sample_rate(n: int, batch_size: int) -> float:
    """q = 1 / ceil(n / B): Opacus's Poisson rate for a loader of batch size B (1 for n <= B)."""
    return 1.0 / max(1, math.ceil(n / batch_size))


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size)) if n else 0


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
    criterion = rule.ctx.criterion
    hparams, global_weights = rule.ctx.params, rule.ctx.global_state
    losses: list[torch.Tensor] = []
    hits: list[torch.Tensor] = []
    sizes: list[int] = []
    steps = 0
    try:
        with warnings.catch_warnings():
            # Opacus's hooks on the first layer fire for the module outputs (the input needs no grad); torch warns
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            for batch in (
                Sampler(num_samples=n, sample_rate=q, generator=sample_generator, steps=total) if total else []
            ):
                optimizer.zero_grad(set_to_none=True)
                if batch:
                    pos = torch.tensor(batch, dtype=torch.int64, device=data.indices.device)
                    xb, yb = data.batch(data.indices[pos], generator, train=True)
                    logits = gsm(xb)
                    loss = criterion(logits, yb)
                    loss.backward()
                    losses.append(loss.detach() * yb.numel())
                    hits.append(logits.detach().argmax(dim=1) == yb)
                    sizes.append(yb.numel())
                else:  # an empty Poisson batch still takes a noised step
                    for p in params:
                        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
                if optimizer.pre_step():  # clip, sum, noise, scale (p.grad)
                    penalty = rule.functional_penalty(hparams, dict(zip(names, params)), global_weights)
                    if penalty is not None:
                        for p, g in zip(params, torch.autograd.grad(penalty, params, allow_unused=True)):
                            if g is not None:
                                p.grad.add_(g)
                    optimizer.original_optimizer.step()
                steps += 1
    finally:
        gsm._close()  # Opacus's hooks off the shared model (the next party, evaluation)
        for p in params:
            p.grad = None
    seen = sum(sizes)
    if seen:
        mean_loss = float(torch.stack(losses).double().sum()) / seen
        acc = float(torch.cat(hits).sum()) / seen
    else:
        mean_loss = acc = float("nan")
    return TrainStats(n, steps, epochs, mean_loss, acc, time.perf_counter() - t0, mean_loss)
