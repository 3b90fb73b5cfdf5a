"""DP-SGD on one party (fedsim/client/dpsgd.py) against per-sample gradients computed
independently with torch.func: one step of SGD with learning rate lr must move the
weights by -lr (sum_i clip_C(g_i) + N(0, sigma^2 C^2 I)) / (q n), where g_i is sample i's
gradient and clip_C(g) = g min(1, C / ||g||)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

pytest.importorskip("opacus", reason="pip install 'fedsim[privacy]'")

from fedsim.client.dpsgd import train_dpsgd  # noqa: E402
from fedsim.client.training import PartyData  # noqa: E402
from fedsim.privacy.dpsgd import sample_rate  # noqa: E402
from fedsim.schema.sections import TrainConfig  # noqa: E402
from strategies.fedprox import FedProxParams, FedProxRule  # noqa: E402
from strategies.rule import ClientRule, TrainContext  # noqa: E402

N, D, K = 24, 6, 3


def _setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(D, 8), nn.ReLU(), nn.Linear(8, K))
    x = torch.randn(N, D) * 3
    y = torch.randint(0, K, (N,))
    data = PartyData(x=x, y=y, indices=torch.arange(N), mean=None, std=None)
    return model, data


def _rule(model, rule_cls=ClientRule, params=None, global_state=None):
    ctx = TrainContext(
        model=model,
        global_state=global_state or {},
        params=params or FedProxParams(name="fedavg"),
        config={},
        records={},
        state=None,
        party=0,
        server_round=1,
        device=torch.device("cpu"),
        criterion=nn.functional.cross_entropy,
        lr=0.1,
        momentum=0.0,
        build_model=lambda: None,
    )
    return rule_cls(ctx)


def _per_sample_grads(model, x, y):
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, xi, yi):
        return nn.functional.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


def _step(model, data, sigma, C, seed=1, rule_cls=ClientRule, params=None, global_state=None):
    cfg = TrainConfig(batch_size=N, lr=0.1, momentum=0.0)  # q = 1: every sample, every step
    return train_dpsgd(
        model,
        _rule(model, rule_cls, params, global_state),
        data,
        cfg,
        epochs=1,
        generator=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        noise_multiplier=sigma,
        max_grad_norm=C,
        sample_generator=torch.Generator().manual_seed(seed + 1),
        noise_generator=torch.Generator().manual_seed(seed + 2),
    )


def test_per_sample_gradients_are_clipped_then_averaged():
    C = 0.05  # below every sample's gradient norm: each is scaled to norm C
    model, data = _setup()
    before = OrderedDict((n, p.detach().clone()) for n, p in model.named_parameters())
    g = _per_sample_grads(model, data.x, data.y)
    norms = torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in g.values()))
    assert bool((norms > C).all())
    factor = (C / (norms + 1e-6)).clamp(max=1.0)  # Opacus's clip factor
    clipped = {n: torch.einsum("i,i...->i...", factor, v) for n, v in g.items()}
    clipped_norms = torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in clipped.values()))
    assert bool((clipped_norms <= C * (1 + 1e-5)).all())
    stats = _step(model, data, sigma=0.0, C=C)
    assert stats.steps == 1 and sample_rate(N, N) == 1.0
    for n, p in model.named_parameters():
        expected = before[n] - 0.1 * clipped[n].sum(0) / N
        assert torch.allclose(p.detach(), expected, atol=1e-6), n
    # the step's total movement is bounded by lr * C (an average of vectors of norm <= C)
    moved = torch.sqrt(sum((p.detach() - before[n]).pow(2).sum() for n, p in model.named_parameters()))
    assert float(moved) <= 0.1 * C * (1 + 1e-5)


def test_noise_has_std_sigma_c_over_the_batch_and_repeats_from_its_seed():
    sigma, C = 2.0, 1.0
    model, data = _setup()
    base = OrderedDict((n, p.detach().clone()) for n, p in model.named_parameters())
    _step(model, data, sigma=0.0, C=C)
    clean = OrderedDict((n, p.detach().clone()) for n, p in model.named_parameters())
    diffs = []
    for seed in range(40):
        model.load_state_dict(base)
        _step(model, data, sigma=sigma, C=C, seed=10 * seed)
        diffs.append(torch.cat([(p.detach() - clean[n]).flatten() for n, p in model.named_parameters()]))
    noise = torch.cat(diffs) / 0.1  # lr
    assert float(noise.std()) == pytest.approx(sigma * C / N, rel=0.05)  # 40 x 83 draws
    model.load_state_dict(base)
    _step(model, data, sigma=sigma, C=C, seed=30)
    first = [p.detach().clone() for p in model.parameters()]
    model.load_state_dict(base)
    _step(model, data, sigma=sigma, C=C, seed=30)
    assert all(torch.equal(a, b.detach()) for a, b in zip(first, model.parameters()))


def test_the_proximal_term_is_added_after_the_noise():
    """FedProx: the penalty mu/2 ||w - w_g||^2 reads no data; its gradient mu (w - w_g) joins the noised one."""
    model, data = _setup()
    g_state = {n: p.detach().clone() + 0.5 for n, p in model.named_parameters()}
    before = OrderedDict((n, p.detach().clone()) for n, p in model.named_parameters())
    _step(model, data, sigma=0.0, C=1e6)  # plain averaged gradient step, no clipping
    plain = OrderedDict((n, p.detach().clone()) for n, p in model.named_parameters())
    model.load_state_dict(before)
    mu = 0.3
    _step(
        model,
        data,
        sigma=0.0,
        C=1e6,
        rule_cls=FedProxRule,
        params=FedProxParams(name="fedprox", mu=mu),
        global_state=g_state,
    )
    for n, p in model.named_parameters():
        expected = plain[n] - 0.1 * mu * (before[n] - g_state[n])
        assert torch.allclose(p.detach(), expected, atol=1e-6), n


def test_hooks_are_removed_after_training():
    model, data = _setup()
    _step(model, data, sigma=1.0, C=1.0)
    assert all(not hasattr(p, "grad_sample") or p.grad_sample is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
