"""FedNova (Wang et al. 2020): a_i, d_i = (w - w_i) / a_i, w <- w - tau_eff sum p_i d_i."""

from collections import OrderedDict

import pytest
import torch
from rule_context import rule_context
from torch import nn

import fedsim
from fedsim.client.training import PartyData, train_local
from fedsim.schema.sections import TrainConfig
from strategies.fednova import A_KEY, FedNovaRule, FedNovaServer, normalizing_factor
from strategies.params import StrategyParams
from strategies.strategy import ClientOutcome, FederationSetup


def _final(result):
    return torch.load(result.run_dir / "model.pt", weights_only=True)


@pytest.mark.parametrize("tau", [1, 2, 3, 7, 40])
def test_plain_sgd_factor_is_tau(tau):
    a = normalizing_factor(tau, 0)
    assert a == tau and isinstance(a, float)
    assert normalizing_factor(tau, 0.0) == tau


def test_zero_steps_factor_is_zero():
    assert normalizing_factor(0, 0.0) == 0.0
    assert normalizing_factor(0, 0.9) == 0.0


def test_momentum_factor_by_hand():
    # [tau - rho (1 - rho^tau) / (1 - rho)] / (1 - rho) for tau = 3, rho = 0.9:
    # rho^3 = 0.729; rho (1 - 0.729) / 0.1 = 2.439; (3 - 2.439) / 0.1 = 5.61
    torch.testing.assert_close(normalizing_factor(3, 0.9), 5.61, rtol=1e-12, atol=1e-12)
    # equivalently sum_{t=1..tau} (1 - rho^t) / (1 - rho) = 1 + 1.9 + 2.71
    torch.testing.assert_close(normalizing_factor(3, 0.9), 1.0 + 1.9 + 2.71, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(normalizing_factor(1, 0.9), 1.0, rtol=1e-12, atol=1e-12)


class _Constant(nn.Module):
    """loss = <w, v>: the gradient is v at every step, whatever the data."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return (x * 0).sum(dim=1, keepdim=True) + torch.cat([self.w, torch.zeros(1)]).unsqueeze(0)


V = torch.tensor([1.0, -2.0, 0.5])


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_reported_factor_is_the_displacement_of_momentum_sgd_in_gradient_steps(rho):
    """With a constant gradient g, tau steps of torch's SGD (momentum rho) move w by lr * a * g."""
    tau, lr = 4, 0.05
    model = _Constant()
    ctx = rule_context(
        model, _Constant, criterion=lambda out, y: (out[:, :3] * V).sum(dim=1).mean(), lr=lr, momentum=rho
    )
    g0 = ctx.global_state
    rule = FedNovaRule(ctx)
    x = torch.zeros(2, 1)
    data = PartyData(x=x, y=torch.zeros(2, dtype=torch.long), indices=torch.arange(2), mean=None, std=None)
    cfg = TrainConfig(epochs=tau, batch_size=2, lr=lr, momentum=rho)
    stats = train_local(model, rule, data, cfg, tau, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert stats.steps == tau
    a = rule.on_train_end(stats.steps).metrics[A_KEY]
    torch.testing.assert_close(a, normalizing_factor(tau, rho))
    torch.testing.assert_close((g0["w"] - model.w.detach()) / lr, a * V, rtol=1e-5, atol=1e-6)


def _outcome(party: int, n: int, state, a: float) -> ClientOutcome:
    return ClientOutcome(
        party=party,
        node_id=100 + party,
        num_examples=n,
        metrics={"num-examples": n, A_KEY: a},
        state=OrderedDict(state),
    )


def _bound() -> FedNovaServer:
    strat = FedNovaServer(StrategyParams(name="fednova"))
    strat.bind(FederationSetup(seed=0, node_of_party={p: 100 + p for p in range(3)}))
    return strat


def test_server_normalised_aggregation_by_hand():
    strat = _bound()
    w = OrderedDict(fc=torch.tensor([1.0, -2.0, 0.5]), b=torch.tensor([[3.0]]))
    ws = [
        {"fc": torch.tensor([0.0, -1.0, 1.5]), "b": torch.tensor([[2.0]])},
        {"fc": torch.tensor([2.0, -2.5, 0.0]), "b": torch.tensor([[3.5]])},
        {"fc": torch.tensor([1.5, 0.0, -1.0]), "b": torch.tensor([[1.0]])},
    ]
    ns, a = [10, 30, 60], [2.0, 5.61, 9.0]
    new = strat.aggregate(1, w, [_outcome(i, ns[i], ws[i], a[i]) for i in range(3)]).state

    p = [n / sum(ns) for n in ns]
    tau_eff = sum(pi * ai for pi, ai in zip(p, a))
    assert tau_eff == pytest.approx(0.1 * 2.0 + 0.3 * 5.61 + 0.6 * 9.0)
    for k in w:
        d = [(w[k].double() - ws[i][k].double()) / a[i] for i in range(3)]
        expected = w[k].double() - tau_eff * sum(pi * di for pi, di in zip(p, d))
        assert new[k].dtype == torch.float32
        torch.testing.assert_close(new[k].double(), expected, rtol=0, atol=1e-6)
    # unequal a_i: not FedAvg
    fedavg = sum(pi * wi["fc"].double() for pi, wi in zip(p, ws))
    assert not torch.allclose(new["fc"].double(), fedavg, atol=1e-3)


def test_equal_factors_are_fedavg():
    strat = _bound()
    w = OrderedDict(fc=torch.tensor([1.0, -2.0]))
    ws = [{"fc": torch.tensor([0.0, 1.0])}, {"fc": torch.tensor([4.0, -1.0])}]
    new = strat.aggregate(1, w, [_outcome(0, 1, ws[0], 5.61), _outcome(1, 3, ws[1], 5.61)]).state
    torch.testing.assert_close(new["fc"], 0.25 * ws[0]["fc"] + 0.75 * ws[1]["fc"])


def test_buffers_are_averaged_as_in_fedavg():
    strat = _bound()
    strat.setup.param_keys = frozenset({"conv.weight"})  # the server knows its model's parameters
    w = OrderedDict(
        [
            ("conv.weight", torch.tensor([1.0])),
            ("bn.running_var", torch.tensor([10.0])),
            ("bn.num_batches_tracked", torch.tensor(4)),
        ]
    )
    ws = [
        OrderedDict(
            [
                ("conv.weight", torch.tensor([0.0])),
                ("bn.running_var", torch.tensor([1.0])),
                ("bn.num_batches_tracked", torch.tensor(5)),
            ]
        ),
        OrderedDict(
            [
                ("conv.weight", torch.tensor([0.0])),
                ("bn.running_var", torch.tensor([1.0])),
                ("bn.num_batches_tracked", torch.tensor(13)),
            ]
        ),
    ]
    new = strat.aggregate(1, w, [_outcome(0, 10, ws[0], 1.0), _outcome(1, 10, ws[1], 9.0)]).state
    # parameters: tau_eff = 5, sum p_i d_i = 0.5 * 1 + 0.5 * 1/9 -> 1 - 5 * 5/9
    torch.testing.assert_close(new["conv.weight"], torch.tensor([1.0 - 25.0 / 9.0]))
    assert new["bn.num_batches_tracked"] == 13
    # buffers: the FedAvg average (the normalised update gives 10 - 5 * 5 = -15: a negative variance)
    torch.testing.assert_close(new["bn.running_var"], torch.tensor([1.0]))


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_equal_local_steps_give_fedavg_weights(tmp_path, tiny, momentum):
    over = dict(
        partition={"scheme": "iid", "n_parties": 4},
        train={"epochs": 2, "batch_size": 32, "lr": 0.1, "momentum": momentum},
    )
    avg = fedsim.run(tiny(strategy={"name": "fedavg"}, **over), out=tmp_path / "fedavg")
    nova = fedsim.run(tiny(strategy={"name": "fednova"}, **over), out=tmp_path / "fednova")
    steps = {r["local_steps_mean"] for r in nova.history}
    assert steps == {8.0}  # 100 samples per party, batches of 32, 2 epochs
    a, b = _final(avg), _final(nova)
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)


def test_unequal_local_steps_differ_from_fedavg(tmp_path, tiny):
    over = dict(
        partition={"scheme": "dirichlet", "n_parties": 4, "beta": 0.5},
        train={"epochs": 1, "batch_size": 16, "lr": 0.05, "momentum": 0.0},
    )
    avg = fedsim.run(tiny(strategy={"name": "fedavg"}, federation={"rounds": 1}, **over), out=tmp_path / "fedavg")
    nova = fedsim.run(tiny(strategy={"name": "fednova"}, federation={"rounds": 1}, **over), out=tmp_path / "fednova")
    from fedsim.rundir.store import read_jsonl

    rows = read_jsonl(nova.run_dir / "clients.jsonl")
    assert len({r["steps"] for r in rows}) > 1
    assert all(r["fednova_a"] == r["steps"] for r in rows)  # plain SGD: a_i = tau_i
    a, b = _final(avg), _final(nova)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) > 1e-4


def test_tau_eff_is_recorded_each_round(tmp_path, tiny):
    run = fedsim.run(tiny(strategy={"name": "fednova"}, train={"momentum": 0.0}), out=tmp_path / "nova")
    for row in run.history:
        # plain SGD: a_i = tau_i, so tau_eff is the example-weighted mean of local steps
        assert row["tau_eff"] > 0
        assert min(1, row["local_steps_mean"]) <= row["tau_eff"]
