"""MOON (Li, He and Song 2021): loss = CE + mu * l_con with the model-contrastive term

l_con = -log( e^{cos(z, z_glob)/T} / (e^{cos(z, z_glob)/T} + sum_j e^{cos(z, z_prev_j)/T}) ).
"""

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from rule_context import rule_context

import fedsim
from fedsim.models import build_model
from fedsim.rundir.store import load_tensors, read_jsonl
from fedsim.schema.sections import ModelConfig
from strategies.moon import MoonParams, MoonRule, contrastive_loss
from strategies.rule import TrainContext

T = 0.5


def _final(result):
    return torch.load(result.run_dir / "model.pt", weights_only=True)


def _cos(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_contrastive_loss_by_hand():
    z = [[1.0, 0.0, 1.0], [0.5, -1.0, 2.0]]
    zg = [[1.0, 0.5, 0.5], [0.0, -1.0, 1.0]]
    zp = [[[0.0, 1.0, 0.0], [1.0, 1.0, -1.0]], [[-1.0, 0.0, 1.0], [2.0, 0.5, 0.0]]]  # two previous models
    per_sample = []
    for b in range(2):
        pos = math.exp(_cos(z[b], zg[b]) / T)
        negs = sum(math.exp(_cos(z[b], zp[j][b]) / T) for j in range(2))
        per_sample.append(-math.log(pos / (pos + negs)))
    expected = sum(per_sample) / 2
    got = contrastive_loss(torch.tensor(z), torch.tensor(zg), [torch.tensor(zp[0]), torch.tensor(zp[1])], T)
    assert got.shape == ()
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_contrastive_loss_one_previous_model_and_temperature():
    z, zg, zp = [[3.0, 4.0]], [[4.0, 3.0]], [[-4.0, 3.0]]
    # cos(z, zg) = 24/25, cos(z, zp) = 0
    for temp in (0.1, 1.0):
        expected = -math.log(math.exp(0.96 / temp) / (math.exp(0.96 / temp) + math.exp(0.0)))
        got = contrastive_loss(torch.tensor(z), torch.tensor(zg), [torch.tensor(zp)], temp)
        torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_no_previous_model_is_exactly_zero():
    z = torch.randn(4, 3, requires_grad=True)
    out = contrastive_loss(z, torch.randn(4, 3), [], T)
    assert torch.equal(out, torch.tensor(0.0))


MODEL_CFG = ModelConfig(name="mlp", hidden=[8], projection_head=True, proj_dim=5)


def _model(seed: int):
    torch.manual_seed(seed)
    return build_model(MODEL_CFG, (6,), 3)


def _ctx(model, global_state, state, mu: float, buffer_size: int = 1) -> TrainContext:
    params = MoonParams(name="moon", mu=mu, temperature=T, buffer_size=buffer_size)
    return rule_context(model, lambda: _model(99), global_state=global_state, params=params, state=state)


def _prefixed(j: int, sd) -> dict:
    return {f"prev{j}.{k}": v.clone() for k, v in sd.items()}


def test_first_round_loss_is_plain_cross_entropy():
    model = _model(0)
    g = OrderedDict((k, v.clone()) for k, v in _model(1).state_dict().items())
    x, y = torch.randn(7, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    rule = MoonRule(_ctx(model, g, None, mu=5.0))
    rule.on_train_begin()
    loss, logits = rule.loss(x, y)
    assert torch.equal(logits, model(x))
    assert torch.equal(loss, F.cross_entropy(model(x), y))


def test_loss_with_previous_models_by_hand():
    model, glob, prev0, prev1 = _model(0), _model(1), _model(2), _model(3)
    state = {**_prefixed(0, prev0.state_dict()), **_prefixed(1, prev1.state_dict())}
    mu = 0.7
    rule = MoonRule(_ctx(model, glob.state_dict(), state, mu=mu, buffer_size=2))
    rule.on_train_begin()
    x, y = torch.randn(4, 6), torch.tensor([2, 0, 1, 1])
    loss, logits = rule.loss(x, y)

    z = model.forward_all(x)[1]
    with torch.no_grad():
        zg, z0, z1 = glob.forward_all(x)[1], prev0.forward_all(x)[1], prev1.forward_all(x)[1]
    expected_con = 0.0
    for b in range(4):
        pos = math.exp(_cos(z[b].tolist(), zg[b].tolist()) / T)
        negs = math.exp(_cos(z[b].tolist(), z0[b].tolist()) / T) + math.exp(_cos(z[b].tolist(), z1[b].tolist()) / T)
        expected_con += -math.log(pos / (pos + negs)) / 4
    expected = F.cross_entropy(logits, y) + mu * expected_con
    torch.testing.assert_close(loss, expected.float(), rtol=1e-5, atol=1e-6)
    # the frozen models give no gradient; the local one does
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_buffer_keeps_the_newest_models_first():
    model = _model(0)
    prev0, prev1 = _model(2).state_dict(), _model(3).state_dict()
    state = {**_prefixed(0, prev0), **_prefixed(1, prev1)}
    for size, expected in (
        (1, [model.state_dict()]),
        (2, [model.state_dict(), prev0]),
        (3, [model.state_dict(), prev0, prev1]),
    ):
        rule = MoonRule(_ctx(model, model.state_dict(), state, mu=1.0, buffer_size=size))
        rule.on_train_begin()
        out = rule.on_train_end(steps=1).state
        assert set(out) == {f"prev{j}.{k}" for j in range(len(expected)) for k in model.state_dict()}
        for j, sd in enumerate(expected):
            for k, v in sd.items():
                assert torch.equal(out[f"prev{j}.{k}"], v)


def _stored(run_dir, party: int, sub: str = "") -> dict:
    base = run_dir / sub if sub else run_dir
    return load_tensors(base / "client_state" / f"party_{party:06d}.pt")


def _fedavg_of(states: list, weights: list) -> dict:
    total = sum(weights)
    return {k: sum((w / total) * s[k].double() for s, w in zip(states, weights)) for k in states[0]}


def _check_buffers_hold_the_local_models(res) -> None:
    """After 2 rounds (all 4 parties each round, buffer 2): prev0 = the round-2 local model,
    prev1 = the round-1 local model. Their FedAvg is that round's global model."""
    rows = [r for r in read_jsonl(res.run_dir / "clients.jsonl") if r["stage"] == "train"]
    n = {r["party"]: r["num_examples"] for r in rows}
    assert sorted(n) == [0, 1, 2, 3]
    final = _final(res)
    round1 = torch.load(res.run_dir / "checkpoints" / "round_000001" / "state.pt", weights_only=True)["arrays"]
    stores = [_stored(res.run_dir, p) for p in range(4)]
    for st in stores:
        assert {k.split(".", 1)[0] for k in st} == {"prev0", "prev1"}
    for j, glob in ((0, final), (1, round1)):
        locals_ = [{k[len(f"prev{j}.") :]: v for k, v in st.items() if k.startswith(f"prev{j}.")} for st in stores]
        assert all(list(line) == list(glob) for line in locals_)
        avg = _fedavg_of(locals_, [n[p] for p in range(4)])
        for k in glob:
            torch.testing.assert_close(avg[k].float(), glob[k], rtol=0, atol=1e-6)
        # the parties' models are their own
        assert not torch.equal(locals_[0]["classifier.weight"], locals_[1]["classifier.weight"])
    # the round-1 snapshot of the store holds prev0 = the round-1 local model, which round 2 moved to prev1
    snap = [_stored(res.run_dir, p, "checkpoints/round_000001") for p in range(4)]
    for st, cur in zip(snap, stores):
        assert {k.split(".", 1)[0] for k in st} == {"prev0"}
        for k, v in st.items():
            assert torch.equal(cur["prev1." + k[len("prev0.") :]], v)


@pytest.fixture
def moon_cfg(tiny):
    def make(**strategy):
        return tiny(
            model={"name": "simple-cnn", "projection_head": True, "proj_dim": 16},
            strategy=strategy,
            train={"epochs": 1, "batch_size": 32, "lr": 0.05, "momentum": 0.5},
        )

    return make


def test_mu_zero_is_fedavg_exactly_and_buffers_hold_local_models(tmp_path, moon_cfg):
    avg = fedsim.run(moon_cfg(name="fedavg"), out=tmp_path / "fedavg")
    moon = fedsim.run(moon_cfg(name="moon", mu=0.0, buffer_size=2), out=tmp_path / "moon")
    a, m = _final(avg), _final(moon)
    assert list(a) == list(m) and any(k.startswith("projection.") for k in a)
    for k in a:
        assert torch.equal(a[k], m[k]), k
    _check_buffers_hold_the_local_models(moon)


def test_contrastive_term_is_active_from_round_two(tmp_path, moon_cfg):
    zero = fedsim.run(moon_cfg(name="moon", mu=0.0, buffer_size=2), out=tmp_path / "zero")
    moon = fedsim.run(moon_cfg(name="moon", mu=5.0, buffer_size=2), out=tmp_path / "moon")
    # round 1: no previous model, no term -> the same as mu = 0
    r1z = torch.load(zero.run_dir / "checkpoints" / "round_000001" / "state.pt", weights_only=True)["arrays"]
    r1m = torch.load(moon.run_dir / "checkpoints" / "round_000001" / "state.pt", weights_only=True)["arrays"]
    for k in r1z:
        assert torch.equal(r1z[k], r1m[k]), k
    assert zero.history[0]["train_loss"] == moon.history[0]["train_loss"]
    # round 2: l_con > 0 adds to the training loss and changes the models
    assert moon.history[1]["train_loss"] > zero.history[1]["train_loss"]
    fz, fm = _final(zero), _final(moon)
    assert any(not torch.equal(fz[k], fm[k]) for k in fz)
    _check_buffers_hold_the_local_models(moon)
