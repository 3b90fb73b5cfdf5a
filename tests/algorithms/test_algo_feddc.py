"""FedDC (Gao et al. 2022) against its formulas (strategies/feddc.py).

Client: theta <- theta - lr (grad F(theta) + alpha (theta + h_i - w) + g - g_i); after
K plain-SGD steps h_i+ = h_i + (theta_K - w), g_i+ = g_i - g + (w - theta_K)/(K lr).
Server: g += (1/N) sum_S dg_i, H += sum_S (theta_i - w), w+ = (1/|S|) sum_S theta_i + H / N.
"""

from collections import OrderedDict

import torch
from toy_quadratic import LR, flat, grad, train_toy

import fedsim
from fedsim.rundir.store import load_tensors
from strategies.arrays import record_to_state
from strategies.feddc import DG_KEY, G_KEY, FedDCParams, FedDCRule, FedDCServer
from strategies.strategy import ClientOutcome, FederationSetup

H = {"weight": torch.tensor([[0.3, -0.2]]), "bias": torch.tensor([0.1])}
G_I = {"weight": torch.tensor([[-0.1, 0.4]]), "bias": torch.tensor([0.2])}
G = {"weight": torch.tensor([[0.05, 0.1]]), "bias": torch.tensor([-0.3])}


def test_client_drift_and_control_variate_updates_by_hand():
    alpha, K = 0.4, 3
    state = {**{f"h.{k}": v for k, v in H.items()}, **{f"g.{k}": v for k, v in G_I.items()}}
    model, w0, rule, stats = train_toy(
        FedDCRule, K, params=FedDCParams(name="feddc", alpha=alpha), state=state, records={G_KEY: G}
    )
    gw, gb = flat(w0)
    hw, hb = flat(H)
    (giw, gib), (cw, cb) = flat(G_I), flat(G)
    w, b = gw.clone(), gb.clone()
    for _ in range(K):
        dw, db = grad(w, b)
        w = w - LR * (dw + alpha * (w + hw - gw) + cw - giw)
        b = b - LR * (db + alpha * (b + hb - gb) + cb - gib)
    got_w, got_b = flat(model.state_dict())
    torch.testing.assert_close(got_w, w, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_b, b, rtol=0, atol=1e-6)
    out = rule.on_train_end(stats.steps)
    new = out.state
    # the drift: h_i+ = h_i + (theta_i - w)
    torch.testing.assert_close(new["h.weight"].double().reshape(-1), hw + (w - gw), rtol=0, atol=1e-6)
    torch.testing.assert_close(new["h.bias"].double().reshape(-1), hb + (b - gb), rtol=0, atol=1e-6)
    # the control variate: g_i+ = g_i - g + (w - theta_i) / (K lr), and dg = g_i+ - g_i
    exp_gw = giw - cw + (gw - w) / (K * LR)
    torch.testing.assert_close(new["g.weight"].double().reshape(-1), exp_gw, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.records[DG_KEY]["weight"].double().reshape(-1), exp_gw - giw, rtol=0, atol=1e-5)


def _outcome(party, n, state, dg):
    return ClientOutcome(
        party=party,
        node_id=100 + party,
        num_examples=n,
        metrics={"num-examples": n},
        state=OrderedDict(state),
        records={DG_KEY: OrderedDict(dg)},
    )


def test_server_by_hand():
    strat = FedDCServer(FedDCParams(name="feddc"))
    strat.bind(FederationSetup(seed=0, node_of_party={p: 100 + p for p in range(4)}, param_keys=frozenset({"w"})))
    s0 = torch.tensor([0.4, 0.0], dtype=torch.float64)
    strat.drift_sum = {"w": s0.clone()}
    strat.g = {"w": torch.tensor([0.1, 0.1])}
    glob = OrderedDict(w=torch.tensor([1.0, 2.0]))
    ys = [{"w": torch.tensor([2.0, 1.0])}, {"w": torch.tensor([0.0, 4.0])}]
    dgs = [{"w": torch.tensor([0.2, -0.4])}, {"w": torch.tensor([0.6, 0.0])}]
    new = strat.aggregate(1, glob, [_outcome(0, 10, ys[0], dgs[0]), _outcome(1, 30, ys[1], dgs[1])]).state
    s1 = s0 + (ys[0]["w"] - glob["w"]).double() + (ys[1]["w"] - glob["w"]).double()
    torch.testing.assert_close(strat.drift_sum["w"], s1)
    avg = 0.5 * ys[0]["w"].double() + 0.5 * ys[1]["w"].double()  # uniform, whatever the sizes (10, 30)
    torch.testing.assert_close(new["w"].double(), avg + s1 / 4, rtol=0, atol=1e-6)
    torch.testing.assert_close(strat.g["w"], torch.tensor([0.1, 0.1]) + (dgs[0]["w"] + dgs[1]["w"]) / 4)
    sent = record_to_state(strat.extra_records(2)[G_KEY])  # the next round's clients get the new g
    assert torch.equal(sent["w"], strat.g["w"])


def test_runs_and_learns(tmp_path, tiny):
    res = fedsim.run(tiny(strategy={"name": "feddc"}, train={"momentum": 0.0}), out=tmp_path / "r")
    assert res.summary["status"] == "finished" and res.summary["test_accuracy"] > 0.25
    state = load_tensors(next((res.run_dir / "client_state").glob("party_*.pt")))
    assert any(k.startswith("h.") for k in state) and any(k.startswith("g.") for k in state)


def test_held_out_parties_are_not_in_n():
    # 4 parties, party 3 held out, three replies of +1 from w = 0: H = 3, w+ = 1 + H / 3 = 2
    strat = FedDCServer(FedDCParams(name="feddc"))
    strat.bind(
        FederationSetup(
            seed=0, node_of_party={p: 100 + p for p in range(4)}, param_keys=frozenset({"w"}), holdout=frozenset({3})
        )
    )
    glob = OrderedDict(w=torch.tensor([0.0]))
    outs = [_outcome(p, 10, {"w": torch.tensor([1.0])}, {"w": torch.tensor([0.3])}) for p in range(3)]
    new = strat.aggregate(1, glob, outs).state
    torch.testing.assert_close(new["w"], torch.tensor([2.0]))
    torch.testing.assert_close(strat.g["w"], torch.tensor([0.3]))  # (1/3) x 3 x 0.3


def test_the_authors_party_weight_by_hand():
    # Gao et al.'s code with w_i = n_i / mean n: alpha_i = alpha / w_i, the server's g seen as
    # g / w_i, and dg_i = w_i (g_i+ - g_i)
    alpha, K, wt = 0.4, 3, 0.5
    state = {**{f"h.{k}": v for k, v in H.items()}, **{f"g.{k}": v for k, v in G_I.items()}}
    model, w0, rule, stats = train_toy(
        FedDCRule, K, params=FedDCParams(name="feddc", alpha=alpha), state=state, records={G_KEY: G}, party_weight=wt
    )
    a = alpha / wt
    gw, gb = flat(w0)
    hw, hb = flat(H)
    (giw, gib), (cw, cb) = flat(G_I), flat(G)
    cw, cb = cw / wt, cb / wt
    w, b = gw.clone(), gb.clone()
    for _ in range(K):
        dw, db = grad(w, b)
        w = w - LR * (dw + a * (w + hw - gw) + cw - giw)
        b = b - LR * (db + a * (b + hb - gb) + cb - gib)
    got_w, _ = flat(model.state_dict())
    torch.testing.assert_close(got_w, w, rtol=0, atol=1e-6)
    out = rule.on_train_end(stats.steps)
    exp_gw = giw - cw + (gw - w) / (K * LR)
    torch.testing.assert_close(out.state["g.weight"].double().reshape(-1), exp_gw, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        out.records[DG_KEY]["weight"].double().reshape(-1), wt * (exp_gw - giw), rtol=0, atol=1e-5
    )
