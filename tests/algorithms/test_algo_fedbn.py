"""FedBN (Li et al. 2021): BatchNorm parameters and buffers stay with each party."""

from collections import OrderedDict

import pytest
import torch
from rule_context import rule_context
from torch import nn

import fedsim
from fedsim.client.training import PartyData, train_local
from fedsim.models import build_model
from fedsim.rundir.store import load_tensors, read_jsonl
from fedsim.schema.sections import ModelConfig, TrainConfig
from strategies.fedbn import FedBNRule, bn_state_keys
from strategies.params import StrategyParams
from strategies.rule import TrainContext
from strategies.strategy import ClientOutcome, FedAvgServer, FederationSetup

BN_KEYS = ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]


class _BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def _net(seed: int) -> _BNNet:
    torch.manual_seed(seed)
    m = _BNNet()
    with torch.no_grad():  # BN starts at 1/0: make every entry distinct
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(-0.5, 0.5)
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
        m.bn.num_batches_tracked.fill_(seed)
    return m


def _copy(sd) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.detach().clone()) for k, v in sd.items())


def _ctx(model, global_state, state) -> TrainContext:
    return rule_context(model, _BNNet, global_state=global_state, state=state, server_round=2)


def test_bn_state_keys_of_the_toy_model():
    assert bn_state_keys(_BNNet()) == BN_KEYS


@pytest.mark.parametrize("hook", ["on_train_begin", "on_evaluate_begin"])
def test_own_bn_is_loaded_over_the_global_weights(hook):
    glob = _copy(_net(1).state_dict())
    own = {k: v.clone() for k, v in _net(2).state_dict().items() if k in BN_KEYS}
    model = _net(3)
    model.load_state_dict(glob)  # what the client runtime does before the rule
    getattr(FedBNRule(_ctx(model, glob, own)), hook)()
    sd = model.state_dict()
    for k in sd:
        expected = own[k] if k in BN_KEYS else glob[k]
        assert torch.equal(sd[k], expected), k


def test_first_round_trains_from_the_global_bn():
    glob = _copy(_net(1).state_dict())
    model = _net(3)
    model.load_state_dict(glob)
    FedBNRule(_ctx(model, glob, None)).on_train_begin()
    for k, v in model.state_dict().items():
        assert torch.equal(v, glob[k])


def test_foreign_keys_in_the_state_are_an_error():
    glob = _copy(_net(1).state_dict())
    model = _net(1)
    with pytest.raises(RuntimeError, match="FedBN state"):
        FedBNRule(_ctx(model, glob, {"other.running_mean": torch.zeros(3)})).on_train_begin()


def _train_party(glob, own_state, x, y):
    model = _net(0)
    model.load_state_dict(glob)
    rule = FedBNRule(_ctx(model, _copy(glob), own_state))
    data = PartyData(x=x, y=y, indices=torch.arange(len(y)), mean=None, std=None)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.1, momentum=0.0)
    stats = train_local(model, rule, data, cfg, 2, torch.Generator().manual_seed(0), torch.device("cpu"), has_bn=True)
    out = rule.on_train_end(stats.steps)
    return model, out.state, stats


def test_two_parties_keep_their_own_bn_and_the_server_averages_the_rest():
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(8, 4, generator=g), 3.0 + 2.0 * torch.randn(12, 4, generator=g)]  # feature shift
    ys = [torch.randint(0, 2, (8,), generator=g), torch.randint(0, 2, (12,), generator=g)]
    glob = _copy(_net(1).state_dict())

    models, states = [], []
    for x, y in zip(xs, ys):
        m, st, stats = _train_party(glob, None, x, y)
        assert stats.steps == 2 * (len(y) // 4)
        models.append(m)
        states.append(st)
    for m, st in zip(models, states):
        assert list(st) == BN_KEYS
        sd = m.state_dict()
        for k in BN_KEYS:
            assert torch.equal(st[k], sd[k])
            assert st[k].data_ptr() != sd[k].data_ptr()  # a copy, not the live tensor
    for k in ("bn.weight", "bn.running_mean", "bn.running_var"):
        assert not torch.allclose(states[0][k], states[1][k])
    assert int(states[0]["bn.num_batches_tracked"]) == 1 + 4 and int(states[1]["bn.num_batches_tracked"]) == 1 + 6

    strat = FedAvgServer(StrategyParams(name="fedbn"))
    strat.bind(FederationSetup(seed=0, node_of_party={0: 100, 1: 101}))
    outcomes = [
        ClientOutcome(p, 100 + p, len(ys[p]), {"num-examples": len(ys[p])}, state=_copy(models[p].state_dict()))
        for p in (0, 1)
    ]
    new = strat.aggregate(1, glob, outcomes).state
    p0, p1 = 8 / 20, 12 / 20
    for k, v in new.items():
        if k == "bn.num_batches_tracked":
            assert v.dtype == torch.int64 and int(v) == 7
            continue
        expected = p0 * models[0].state_dict()[k].double() + p1 * models[1].state_dict()[k].double()
        torch.testing.assert_close(v.double(), expected, rtol=0, atol=1e-6)

    # round 2: party 0 receives the averaged model but trains with its own BN
    model = _net(0)
    model.load_state_dict(new)
    FedBNRule(_ctx(model, _copy(new), states[0])).on_train_begin()
    for k, v in model.state_dict().items():
        assert torch.equal(v, states[0][k] if k in BN_KEYS else new[k]), k


def test_resnet_run_stores_each_partys_own_bn(tmp_path, tiny):
    """One short ResNet-18 run, one party per round: a lone party's model is the round's global model."""
    cfg = tiny(
        data={"n_train": 48, "n_test": 16},
        partition={"scheme": "iid", "n_parties": 2},
        model={"name": "resnet18"},
        strategy={"name": "fedbn"},
        train={"epochs": 1, "batch_size": 24, "lr": 0.05, "momentum": 0.0},
        federation={"rounds": 3, "fraction_fit": 0.5},
        eval={"train_sample": 0},
    )
    res = fedsim.run(cfg, out=tmp_path / "run")
    rows = [r for r in read_jsonl(res.run_dir / "clients.jsonl") if r["stage"] == "train"]
    cohort = {r["round"]: [] for r in rows}
    for r in rows:
        cohort[r["round"]].append(r["party"])
    assert sorted(cohort) == [1, 2, 3] and all(len(c) == 1 for c in cohort.values())
    last = {c[0]: rnd for rnd, c in sorted(cohort.items())}
    assert sorted(last) == [0, 1]  # seed 0's cohorts include both parties

    keys = bn_state_keys(build_model(ModelConfig(name="resnet18"), (3, 16, 16), 4))
    stored = {p: load_tensors(res.run_dir / "client_state" / f"party_{p:06d}.pt") for p in last}
    for p, rnd in last.items():
        glob = torch.load(res.run_dir / "checkpoints" / f"round_{rnd:06d}" / "state.pt", weights_only=True)["arrays"]
        assert list(stored[p]) == keys
        for k in keys:  # the lone party's BN = that round's model's BN
            assert torch.equal(stored[p][k], glob[k]), (p, k)
    assert not torch.equal(stored[0]["encoder.bn1.running_mean"], stored[1]["encoder.bn1.running_mean"])
    assert not torch.equal(stored[0]["encoder.bn1.weight"], stored[1]["encoder.bn1.weight"])
