"""FedDyn (Acar et al. 2021) against its formulas (strategies/feddyn.py).

Client: theta <- theta - lr (grad L(theta) - g_k + alpha (theta - w)); after K steps
g_k+ = g_k - alpha (theta_K - w). Server over P of m parties:
h <- h - alpha (1/m) sum_P (theta_k - w);  w+ = sum_P p_k theta_k - h / alpha.
"""

from collections import OrderedDict

import torch
from toy_quadratic import LR, flat, grad, train_toy

import fedsim
from strategies.feddyn import FedDynParams, FedDynRule, FedDynServer
from strategies.strategy import ClientOutcome, FederationSetup

G_K = {"weight": torch.tensor([[0.2, -0.1]]), "bias": torch.tensor([0.05])}


def test_client_steps_and_gradient_state_by_hand():
    alpha, K = 0.3, 3
    model, w0, rule, stats = train_toy(FedDynRule, K, params=FedDynParams(name="feddyn", alpha=alpha), state=G_K)
    assert stats.steps == K
    gw0, gb0 = flat(w0)
    kw, kb = flat(G_K)
    w, b = gw0.clone(), gb0.clone()
    for _ in range(K):
        dw, db = grad(w, b)
        w, b = w - LR * (dw - kw + alpha * (w - gw0)), b - LR * (db - kb + alpha * (b - gb0))
    got_w, got_b = flat(model.state_dict())
    torch.testing.assert_close(got_w, w, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_b, b, rtol=0, atol=1e-6)
    new = rule.on_train_end(stats.steps).state
    nw, nb = flat(new)
    torch.testing.assert_close(nw, kw - alpha * (w - gw0), rtol=0, atol=1e-6)
    torch.testing.assert_close(nb, kb - alpha * (b - gb0), rtol=0, atol=1e-6)


def _outcome(party, n, state):
    return ClientOutcome(
        party=party, node_id=100 + party, num_examples=n, metrics={"num-examples": n}, state=OrderedDict(state)
    )


def test_server_by_hand():
    alpha = 0.5
    strat = FedDynServer(FedDynParams(name="feddyn", alpha=alpha))
    strat.bind(FederationSetup(seed=0, node_of_party={p: 100 + p for p in range(4)}, param_keys=frozenset({"w"})))
    h0 = torch.tensor([0.1, -0.2], dtype=torch.float64)
    strat.h = {"w": h0.clone()}
    glob = OrderedDict(w=torch.tensor([1.0, 2.0]), bn=torch.tensor([3.0]))
    ys = [
        {"w": torch.tensor([2.0, 1.0]), "bn": torch.tensor([1.0])},
        {"w": torch.tensor([0.0, 4.0]), "bn": torch.tensor([5.0])},
    ]
    new = strat.aggregate(1, glob, [_outcome(0, 30, ys[0]), _outcome(2, 10, ys[1])]).state
    d = sum(y["w"].double() - glob["w"].double() for y in ys)
    h1 = h0 - alpha / 4 * d
    avg = 0.75 * ys[0]["w"].double() + 0.25 * ys[1]["w"].double()
    torch.testing.assert_close(strat.h["w"], h1)
    torch.testing.assert_close(new["w"].double(), avg - h1 / alpha, rtol=0, atol=1e-6)
    torch.testing.assert_close(new["bn"], torch.tensor([2.0]))  # a buffer: FedAvg's average


def test_alpha_zero_is_fedavg(tmp_path, tiny):
    dyn = fedsim.run(tiny(strategy={"name": "feddyn", "alpha": 0.0, "max_grad_norm": 0.0}), out=tmp_path / "feddyn")
    avg = fedsim.run(tiny(strategy={"name": "fedavg"}), out=tmp_path / "fedavg")
    assert (dyn.run_dir / "model.pt").read_bytes() == (avg.run_dir / "model.pt").read_bytes()
    assert not list((dyn.run_dir / "client_state").glob("party_*.pt"))  # no state kept at alpha = 0


def test_default_alpha_runs_and_keeps_a_state_per_trained_party(tmp_path, tiny):
    res = fedsim.run(
        tiny(strategy={"name": "feddyn"}, federation={"rounds": 2, "fraction_fit": 0.5}), out=tmp_path / "r"
    )
    trained = {
        o["party"] for o in map(__import__("json").loads, (res.run_dir / "clients.jsonl").read_text().splitlines())
    }
    assert sorted(p.name for p in (res.run_dir / "client_state").glob("party_*.pt")) == [
        f"party_{p:06d}.pt" for p in sorted(trained)
    ]
    assert res.summary["test_accuracy"] > 0.25


def test_held_out_parties_are_not_in_m():
    # 4 parties, party 3 held out, three updates of +1 from w = 0 (alpha 1, h = 0):
    # h = -alpha (1/3) 3 = -1, w+ = 1 - h / alpha = 2 (m = 4 would give 1.75)
    strat = FedDynServer(FedDynParams(name="feddyn", alpha=1.0))
    setup = FederationSetup(
        seed=0, node_of_party={p: 100 + p for p in range(4)}, param_keys=frozenset({"w"}), holdout=frozenset({3})
    )
    strat.bind(setup)
    glob = OrderedDict(w=torch.tensor([0.0]))
    new = strat.aggregate(1, glob, [_outcome(p, 10, {"w": torch.tensor([1.0])}) for p in range(3)]).state
    torch.testing.assert_close(new["w"], torch.tensor([2.0]))


def test_the_authors_per_party_alpha_and_clipping_by_hand():
    # Acar et al.'s code: alpha_k = alpha / w_k (w_k = n_k / mean n); the clip covers
    # grad L - g_k - alpha_k w, and alpha_k theta (their weight decay) is added after it
    alpha, K, weight, clip = 0.3, 3, 2.0, 0.5
    model, w0, rule, stats = train_toy(
        FedDynRule,
        K,
        params=FedDynParams(name="feddyn", alpha=alpha, max_grad_norm=clip),
        state=G_K,
        party_weight=weight,
    )
    a = alpha / weight
    gw0, gb0 = flat(w0)
    kw, kb = flat(G_K)
    w, b = gw0.clone(), gb0.clone()
    for _ in range(K):
        dw, db = grad(w, b)
        cw, cb = dw - kw - a * gw0, db - kb - a * gb0
        norm = torch.sqrt((cw**2).sum() + (cb**2).sum())
        scale = min(1.0, clip / (float(norm) + 1e-6))  # torch's clip_grad_norm_
        w, b = w - LR * (scale * cw + a * w), b - LR * (scale * cb + a * b)
    got_w, got_b = flat(model.state_dict())
    torch.testing.assert_close(got_w, w, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_b, b, rtol=0, atol=1e-6)
    nw, _ = flat(rule.on_train_end(stats.steps).state)
    torch.testing.assert_close(nw, kw - a * (w - gw0), rtol=0, atol=1e-6)


def test_party_weights_are_sizes_over_the_mean_of_the_training_parties(tmp_path, tiny):
    from fedsim.inputs.run_inputs import RunSettings, experiment_for

    cfg = fedsim.load_config(tiny(eval={"local_test": "split"}, federation={"holdout_parties": 1}))
    exp = experiment_for(RunSettings(cfg, str(tmp_path / "r"), False))
    sizes = {p: len(v) for p, v in exp.dataidxs.items() if p not in exp.holdout}
    mean = sum(sizes.values()) / 3
    assert len(sizes) == 3
    for p, n in sizes.items():
        assert abs(exp.party_weight(p) - n / mean) < 1e-12
    assert [exp.party_weight(p) for p in exp.holdout] == [1.0]
