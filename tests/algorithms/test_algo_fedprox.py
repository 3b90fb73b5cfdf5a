"""FedProx (Li et al. 2020): local loss + mu/2 ||w - w_global||^2; mu = 0 is FedAvg."""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from rule_context import rule_context
from torch import nn

import fedsim
from strategies.fedprox import FedProxParams, FedProxRule
from strategies.rule import TrainContext


def _final(result) -> "OrderedDict[str, torch.Tensor]":
    return torch.load(result.run_dir / "model.pt", weights_only=True)


def _assert_states_equal(a, b) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def _ctx(model: nn.Module, global_state, mu: float) -> TrainContext:
    return rule_context(
        model, lambda: nn.Linear(3, 2), global_state=global_state, params=FedProxParams(name="fedprox", mu=mu)
    )


class _TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_mu_zero_gives_fedavg_weights_exactly(tmp_path, tiny):
    avg = fedsim.run(tiny(strategy={"name": "fedavg"}), out=tmp_path / "fedavg")
    prox = fedsim.run(tiny(strategy={"name": "fedprox", "mu": 0.0}), out=tmp_path / "fedprox")
    assert prox.summary["strategy"] == "fedprox"
    _assert_states_equal(_final(prox), _final(avg))
    assert [h["train_loss"] for h in prox.history] == [h["train_loss"] for h in avg.history]


def test_positive_mu_reaches_the_clients_and_pulls_towards_the_global_model(tmp_path, tiny):
    """With a large mu the local models stay closer to w_global: the round's updates shrink."""
    avg = fedsim.run(tiny(strategy={"name": "fedavg"}, federation={"rounds": 1}), out=tmp_path / "fedavg")
    prox = fedsim.run(tiny(strategy={"name": "fedprox", "mu": 5.0}, federation={"rounds": 1}), out=tmp_path / "fedprox")
    a, p = _final(avg), _final(prox)
    assert any(not torch.equal(a[k], p[k]) for k in a)
    assert prox.history[0]["update_norm_mean"] < avg.history[0]["update_norm_mean"]


def test_proximal_loss_by_hand():
    torch.manual_seed(0)
    model = _TwoLayer()
    global_state = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    # move the local weights away from the global ones by known offsets
    offsets = {}
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            offsets[name] = torch.full_like(p, 0.1 * (i + 1))
            p.add_(offsets[name])
    x = torch.randn(5, 3)
    y = torch.tensor([0, 1, 1, 0, 1])
    mu = 0.3
    rule = FedProxRule(_ctx(model, global_state, mu))
    rule.on_train_begin()
    loss, logits = rule.loss(x, y)

    base = F.cross_entropy(model(x), y)
    # ||w - w_global||^2 over every parameter: the offsets are constant per tensor
    sq = sum(float((0.1 * (i + 1)) ** 2) * p.numel() for i, (_, p) in enumerate(model.named_parameters()))
    torch.testing.assert_close(logits, model(x))
    torch.testing.assert_close(loss, base + 0.5 * mu * torch.tensor(sq), rtol=1e-6, atol=1e-6)

    # d/dw of the proximal term is mu (w - w_global)
    loss.backward()
    with_prox = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(with_prox[n] - p.grad, mu * offsets[n], rtol=1e-5, atol=1e-6)


def test_proximal_term_skips_frozen_parameters_and_mu_zero_is_the_plain_loss():
    torch.manual_seed(1)
    model = _TwoLayer()
    global_state = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    model.fc1.weight.requires_grad_(False)
    x, y = torch.randn(4, 3), torch.tensor([1, 0, 1, 1])

    rule = FedProxRule(_ctx(model, global_state, 2.0))
    rule.on_train_begin()
    trainable = [p for p in model.parameters() if p.requires_grad]
    expected = sum(0.25 * p.numel() for p in trainable)
    torch.testing.assert_close(rule.proximal_term(), torch.tensor(float(expected)))

    rule0 = FedProxRule(_ctx(model, global_state, 0.0))
    rule0.on_train_begin()
    loss0, _ = rule0.loss(x, y)
    assert torch.equal(loss0, F.cross_entropy(model(x), y))
