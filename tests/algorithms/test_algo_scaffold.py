"""SCAFFOLD option II (Karimireddy et al. 2020) against the formulas of strategies/scaffold.py.

Client: every local step uses g + c - c_i; after K steps
c_i+ = c_i - c + (w_global - y) / (K lr), dc = c_i+ - c_i.
Server over a cohort S of N parties: w += lr_g * sum_k p_k (y_k - w), c += (|S|/N) mean(dc).
"""

from collections import OrderedDict

import pytest
import torch
from rule_context import rule_context
from torch import nn

import fedsim
import strategies
from fedsim.client.training import PartyData, train_local
from fedsim.inputs.run_inputs import Experiment, RunSettings
from fedsim.rundir.store import load_tensors, read_jsonl
from fedsim.schema.sections import TrainConfig
from fedsim.server.app import initial_state
from strategies.arrays import record_to_state
from strategies.fednova import normalizing_factor
from strategies.rule import ClientRule
from strategies.scaffold import C_KEY, DC_KEY, ScaffoldParams, ScaffoldRule, ScaffoldServer
from strategies.strategy import ClientOutcome, FederationSetup

LR = 0.1


def _final(result):
    return torch.load(result.run_dir / "model.pt", weights_only=True)


# ------------------------------------------------------------------ toy quadratic
# A linear model y = x . w + b on 4 fixed points with loss 0.5 * mean((x.w + b - t)^2):
# grad_w = X^T r / n, grad_b = mean(r), r = X w + b - t. One full batch per epoch.

X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, 0.5]])
T = torch.tensor([1.0, -1.0, 0.5, 2.0])


def _quadratic(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out.squeeze(1) - t) ** 2).mean()


def _grad(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r = X.double() @ w + b - T.double()
    return X.double().T @ r / len(T), r.mean().reshape(1)


def _toy_model() -> nn.Linear:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, -0.2]]))
        model.bias.copy_(torch.tensor([0.1]))
    return model


def _train_toy(rule_cls, c, c_i, epochs: int):
    model = _toy_model()
    records = {C_KEY: c} if c is not None else {}
    ctx = rule_context(model, _toy_model, records=records, state=c_i, server_round=2, criterion=_quadratic, lr=LR)
    global_state = ctx.global_state
    rule = rule_cls(ctx)
    data = PartyData(x=X, y=T, indices=torch.arange(len(T)), mean=None, std=None)
    cfg = TrainConfig(epochs=epochs, batch_size=len(T), lr=LR, momentum=0.0)
    stats = train_local(model, rule, data, cfg, epochs, torch.Generator().manual_seed(0), torch.device("cpu"))
    return model, global_state, rule, stats


C = {"weight": torch.tensor([[0.05, -0.1]]), "bias": torch.tensor([0.2])}
C_I = {"weight": torch.tensor([[-0.3, 0.05]]), "bias": torch.tensor([0.1])}


def test_client_steps_use_corrected_gradient_and_control_variate_update_by_hand():
    K = 3
    model, g, rule, stats = _train_toy(ScaffoldRule, C, C_I, epochs=K)
    assert stats.steps == K

    # every step: y <- y - lr (g(y) + c - c_i), simulated in float64
    w = g["weight"].double().reshape(-1)
    b = g["bias"].double()
    corr_w = (C["weight"] - C_I["weight"]).double().reshape(-1)
    corr_b = (C["bias"] - C_I["bias"]).double()
    grads_w, grads_b = [], []
    for _ in range(K):
        gw, gb = _grad(w, b)
        grads_w.append(gw)
        grads_b.append(gb)
        w = w - LR * (gw + corr_w)
        b = b - LR * (gb + corr_b)
    torch.testing.assert_close(model.weight.detach().double().reshape(-1), w, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.bias.detach().double(), b, rtol=0, atol=1e-6)

    out = rule.on_train_end(stats.steps)
    c_new, dc = out.state, out.records[DC_KEY]
    assert set(c_new) == set(dc) == {"weight", "bias"}
    # c_i+ = c_i - c + (w_global - y) / (K lr)
    exp_w = (
        C_I["weight"].double().reshape(-1)
        - C["weight"].double().reshape(-1)
        + (g["weight"].double().reshape(-1) - w) / (K * LR)
    )
    exp_b = C_I["bias"].double() - C["bias"].double() + (g["bias"].double() - b) / (K * LR)
    torch.testing.assert_close(c_new["weight"].double().reshape(-1), exp_w, rtol=0, atol=1e-5)
    torch.testing.assert_close(c_new["bias"].double(), exp_b, rtol=0, atol=1e-5)
    # option II with plain SGD: c_i+ is the mean of the raw local gradients along the path
    torch.testing.assert_close(c_new["weight"].double().reshape(-1), torch.stack(grads_w).mean(0), rtol=0, atol=1e-5)
    torch.testing.assert_close(c_new["bias"].double(), torch.stack(grads_b).mean(0), rtol=0, atol=1e-5)
    # dc = c_i+ - c_i
    for k in ("weight", "bias"):
        torch.testing.assert_close(dc[k], c_new[k] - C_I[k])


def test_after_backward_adds_exactly_c_minus_ci():
    model = _toy_model()
    ctx = rule_context(model, _toy_model, records={C_KEY: C}, state=C_I, server_round=2, criterion=_quadratic, lr=LR)
    rule = ScaffoldRule(ctx)
    rule.on_train_begin()
    loss, _ = rule.loss(X, T)
    loss.backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    rule.on_after_backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, raw[n] + (C[n] - C_I[n]), rtol=0, atol=0)


def test_zero_control_variates_train_exactly_like_plain_sgd():
    scaffold_model, _, rule, stats = _train_toy(ScaffoldRule, None, None, epochs=2)
    plain_model, _, _, _ = _train_toy(ClientRule, None, None, epochs=2)
    for a, b in zip(scaffold_model.state_dict().values(), plain_model.state_dict().values()):
        assert torch.equal(a, b)
    # first round of a party: c_i = 0, c = 0, so c_i+ = (w_global - y) / (K lr) = dc
    out = rule.on_train_end(stats.steps)
    for k in ("weight", "bias"):
        torch.testing.assert_close(out.records[DC_KEY][k], out.state[k])


# ------------------------------------------------------------------- server half


def _outcome(party: int, n: int, state, dc) -> ClientOutcome:
    return ClientOutcome(
        party=party,
        node_id=100 + party,
        num_examples=n,
        metrics={"num-examples": n},
        state=OrderedDict(state),
        records={DC_KEY: OrderedDict(dc)},
    )


@pytest.mark.parametrize("server_lr", [1.0, 0.5])
def test_server_moves_c_by_sampled_share_of_mean_dc_and_model_by_weighted_delta(server_lr):
    strat = ScaffoldServer(ScaffoldParams(name="scaffold", server_lr=server_lr))
    strat.bind(FederationSetup(seed=0, node_of_party={p: 100 + p for p in range(4)}))
    w = OrderedDict(a=torch.tensor([1.0, 2.0, -1.0]), b=torch.tensor([[0.5]]))
    c0 = {"a": torch.tensor([0.1, 0.0, -0.2]), "b": torch.tensor([[0.3]])}
    strat.c = {k: v.clone() for k, v in c0.items()}

    y1 = {"a": torch.tensor([1.5, 1.0, 0.0]), "b": torch.tensor([[1.0]])}
    y3 = {"a": torch.tensor([0.0, 3.0, -2.0]), "b": torch.tensor([[-0.5]])}
    dc1 = {"a": torch.tensor([0.2, -0.4, 0.6]), "b": torch.tensor([[1.0]])}
    dc3 = {"a": torch.tensor([-0.1, 0.3, 0.2]), "b": torch.tensor([[-2.0]])}
    n1, n3 = 30, 10  # |S| = 2 of N = 4
    new = strat.aggregate(3, w, [_outcome(1, n1, y1, dc1), _outcome(3, n3, y3, dc3)]).state

    p1, p3 = n1 / (n1 + n3), n3 / (n1 + n3)
    for k in w:
        wd = w[k].double()
        expected = wd + server_lr * (p1 * (y1[k].double() - wd) + p3 * (y3[k].double() - wd))
        assert new[k].dtype == torch.float32
        torch.testing.assert_close(new[k].double(), expected, rtol=0, atol=1e-6)
        exp_c = c0[k].double() + (2 / 4) * (dc1[k].double() + dc3[k].double()) / 2
        torch.testing.assert_close(strat.c[k].double(), exp_c, rtol=0, atol=1e-7)
    # the new c goes to the clients of the next round
    sent = record_to_state(strat.extra_records(4)[C_KEY])
    for k in c0:
        assert torch.equal(sent[k], strat.c[k])


def test_server_first_round_starts_c_from_zero_and_sends_nothing_before():
    strat = ScaffoldServer(ScaffoldParams(name="scaffold"))
    strat.bind(FederationSetup(seed=0, node_of_party={p: 100 + p for p in range(4)}))
    assert strat.extra_records(1) == {}
    w = OrderedDict(a=torch.zeros(2))
    dc = {"a": torch.tensor([0.4, -0.8])}
    strat.aggregate(1, w, [_outcome(0, 5, {"a": torch.ones(2)}, dc)])
    torch.testing.assert_close(strat.c["a"], torch.tensor([0.1, -0.2]))  # (1/4) * dc


def test_server_lr_leaves_buffers_averaged_as_in_fedavg():
    strat = ScaffoldServer(ScaffoldParams(name="scaffold", server_lr=0.5))
    strat.bind(FederationSetup(seed=0, node_of_party={0: 100, 1: 101}, param_keys=frozenset({"fc.weight"})))
    w = OrderedDict(
        [
            ("fc.weight", torch.tensor([1.0, 1.0])),
            ("bn.running_mean", torch.tensor([0.0, 4.0])),
            ("bn.num_batches_tracked", torch.tensor(3)),
        ]
    )
    ys = [
        OrderedDict(
            [
                ("fc.weight", torch.tensor([3.0, 1.0])),
                ("bn.running_mean", torch.tensor([2.0, 2.0])),
                ("bn.num_batches_tracked", torch.tensor(5)),
            ]
        ),
        OrderedDict(
            [
                ("fc.weight", torch.tensor([1.0, 3.0])),
                ("bn.running_mean", torch.tensor([4.0, 0.0])),
                ("bn.num_batches_tracked", torch.tensor(7)),
            ]
        ),
    ]
    # control variates cover the trainable parameters only
    dcs = [{"fc.weight": torch.zeros(2)}, {"fc.weight": torch.zeros(2)}]
    new = strat.aggregate(2, w, [_outcome(p, 10, ys[p], dcs[p]) for p in (0, 1)]).state
    torch.testing.assert_close(new["fc.weight"], torch.tensor([1.5, 1.5]))  # w + 0.5 * mean delta
    assert new["bn.num_batches_tracked"] == 7
    torch.testing.assert_close(new["bn.running_mean"], torch.tensor([3.0, 1.0]))  # the plain average


# ------------------------------------------------------------------------- runs


def test_round_one_equals_fedavg(tmp_path, tiny):
    avg = fedsim.run(tiny(strategy={"name": "fedavg"}, federation={"rounds": 1}), out=tmp_path / "fedavg")
    sc = fedsim.run(tiny(strategy={"name": "scaffold"}, federation={"rounds": 1}), out=tmp_path / "scaffold")
    a, s = _final(avg), _final(sc)
    assert list(a) == list(s)
    for k in a:  # c = c_i = 0 leaves the local steps alone and lr_g = 1 is FedAvg's average: exact
        assert torch.equal(s[k], a[k]), k
    assert sc.history[0]["train_loss"] == avg.history[0]["train_loss"]


def test_partial_participation_keeps_c_the_mean_of_all_ci(tmp_path, tiny):
    res = fedsim.run(
        tiny(strategy={"name": "scaffold"}, federation={"rounds": 2, "fraction_fit": 0.5}), out=tmp_path / "run"
    )
    rows = [r for r in read_jsonl(res.run_dir / "clients.jsonl") if r["stage"] == "train"]
    assert [r["clients"] for r in res.history] == [2, 2]
    trained = {r["party"] for r in rows}
    assert len(trained) == 3  # seed 0 samples {0, 1} then {0, 2}: one party never trains
    files = sorted(p.name for p in (res.run_dir / "client_state").glob("party_*.pt"))
    assert files == [f"party_{p:06d}.pt" for p in sorted(trained)]

    # c starts at 0, every c_i starts at 0 and c += (1/N) sum_S dc_i: c = (1/N) sum_i c_i
    ckpt = torch.load(res.run_dir / "checkpoints" / "round_000002" / "state.pt", weights_only=True)
    strat = strategies.build(res.config.strategy)
    strat.load_state_dict(ckpt["strategy"])
    c = strat.c
    cis = [load_tensors(res.run_dir / "client_state" / f) for f in files]
    model = _final(res)
    assert set(c) == {k for k in model if k.endswith("weight") or k.endswith("bias")}
    for k in c:
        assert all(set(ci) == set(c) for ci in cis)
        expected = sum(ci[k].double() for ci in cis) / 4
        torch.testing.assert_close(c[k].double(), expected, rtol=1e-5, atol=1e-6)
    assert any(float(v.abs().max()) > 0 for v in c.values())

    # round 1 (c = c_i = 0): c_i+ = (w0 - y_i) / (a_i lr), a_i = a(K_i, momentum) (K_i
    # without momentum), and w1 = sum_i p_i y_i, so sum_i p_i a_i lr c_i+ = w0 - w1
    w0 = initial_state(Experiment(RunSettings(res.config, str(res.run_dir))))
    snap = res.run_dir / "checkpoints" / "round_000001"
    w1 = torch.load(snap / "state.pt", weights_only=True)["arrays"]
    first = [r for r in rows if r["round"] == 1]
    total = sum(r["num_examples"] for r in first)
    lr = res.config.train.lr
    cis1 = {r["party"]: load_tensors(snap / "client_state" / f"party_{r['party']:06d}.pt") for r in first}
    assert sorted(p.name for p in (snap / "client_state").iterdir()) == [f"party_{p:06d}.pt" for p in sorted(cis1)]
    for k in c:
        a = {r["party"]: normalizing_factor(r["steps"], res.config.train.momentum) for r in first}
        lhs = sum((r["num_examples"] / total) * a[r["party"]] * lr * cis1[r["party"]][k].double() for r in first)
        torch.testing.assert_close(lhs, (w0[k] - w1[k]).double(), rtol=1e-4, atol=1e-6)


def test_momentum_uses_the_effective_number_of_steps(tmp_path, tiny):
    """With momentum, c_i is the mean corrected gradient: (w - y) / (a(K, rho) lr).

    Dividing by K instead inflated the control variates by ~1/(1 - rho) a round: with
    these settings every client diverged (non-finite) from round 3 or 4 on.
    """
    res = fedsim.run(
        tiny(
            strategy={"name": "scaffold"},
            train={"momentum": 0.9, "lr": 0.02, "epochs": 2},
            partition={"scheme": "iid"},
            federation={"rounds": 10, "max_failure_fraction": 1.0},
        ),
        out=tmp_path / "m",
    )
    assert all(r["failures"] == [] and r["clients"] == 4 for r in res.history)
    norms = [r["update_norm_mean"] for r in res.history]
    assert max(norms) < 10 * norms[0]
    assert res.summary["test_accuracy"] > 0.5  # 4 classes
