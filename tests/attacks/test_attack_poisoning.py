"""What each attack poisons, against hand computations: the malicious replies of the model
poisoning attacks, the malicious parties' samples of the data poisoning ones, and the
success rate."""

from __future__ import annotations

from collections import OrderedDict
from statistics import NormalDist

import numpy as np
import pytest
import torch

import attacks
from attacks.alie import z_max
from attacks.backdoor import TRIGGER, stamp
from fedsim.config.load import load_config
from fedsim.inputs.adversary import poison_training_set
from strategies.replies import UpdateSpace
from strategies.strategy import ClientOutcome, FederationSetup

G = OrderedDict([("w", torch.tensor([1.0, -1.0, 0.5])), ("bn", torch.tensor([2.0]))])
SETUP = FederationSetup(seed=7, node_of_party={}, param_keys=frozenset({"w"}))


def _outcomes(updates):
    return [
        ClientOutcome(
            party=i,
            node_id=i,
            num_examples=10,
            metrics={},
            state=OrderedDict(w=G["w"] + torch.tensor(u), bn=torch.tensor([3.0])),
        )
        for i, u in enumerate(updates)
    ]


def _poison(name, updates, malicious, seed=7, server_round=1, **params):
    p = attacks.get(name).Params(name=name, parties=list(malicious), **params)
    outcomes = _outcomes(updates)
    rule = attacks.build_rule(p, n_parties=len(updates), seed=seed)
    rule.apply(server_round, G, outcomes, SETUP)
    return [(o.state["w"] - G["w"]).double().numpy() for o in outcomes], outcomes


HONEST = [[1.0, 2.0, 0.0], [3.0, 0.0, 1.0], [2.0, 1.0, -1.0], [2.0, 1.0, 4.0]]


def test_alie_sends_mean_minus_z_max_std_of_the_honest_updates():
    # n = 10 replies, m = 2 malicious: s = floor(10/2 + 1) - 2 = 4, z = Phi^-1((10 - 4) / 10)
    assert z_max(10, 2) == pytest.approx(NormalDist().inv_cdf(0.6)) and z_max(10, 2) == pytest.approx(
        0.2533471, abs=1e-6
    )
    honest = HONEST + [[0.0, 0.0, 0.0]] * 4
    d, outs = _poison("alie", honest + [[9.0, 9.0, 9.0], [5.0, 5.0, 5.0]], malicious=[8, 9])
    h = np.array(honest)
    want = h.mean(0) - z_max(10, 2) * h.std(0, ddof=1)
    np.testing.assert_allclose(d[8], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d[9], want, rtol=1e-6, atol=1e-6)
    for i in range(8):  # honest replies untouched
        np.testing.assert_array_equal(d[i], np.array(honest[i], dtype=np.float32))
    assert float(outs[8].state["bn"]) == 3.0  # buffers are sent as trained


def test_alie_with_a_given_z():
    d, _ = _poison("alie", HONEST + [[9.0, 9.0, 9.0]], malicious=[4], z=1.5)
    h = np.array(HONEST)
    np.testing.assert_allclose(d[4], h.mean(0) - 1.5 * h.std(0, ddof=1), rtol=1e-6, atol=1e-6)


def test_ipm_sends_minus_epsilon_times_the_honest_mean():
    d, _ = _poison("ipm", HONEST + [[9.0, 9.0, 9.0]], malicious=[4])
    np.testing.assert_allclose(d[4], -0.1 * np.array(HONEST).mean(0), rtol=1e-6)
    d, _ = _poison("ipm", HONEST + [[9.0, 9.0, 9.0]], malicious=[4], epsilon=2.0)
    np.testing.assert_allclose(d[4], -2.0 * np.array(HONEST).mean(0), rtol=1e-6)


def test_sign_flip_and_scale_use_the_partys_own_update():
    d, _ = _poison("sign-flip", HONEST + [[1.0, -2.0, 3.0]], malicious=[4], scale=2.0)
    np.testing.assert_allclose(d[4], [-2.0, 4.0, -6.0])
    d, _ = _poison("scale", HONEST + [[1.0, -2.0, 3.0]], malicious=[4])  # lambda = K = 5 replies
    np.testing.assert_allclose(d[4], [5.0, -10.0, 15.0])
    d, _ = _poison("scale", HONEST + [[1.0, -2.0, 3.0]], malicious=[4], factor=3.0)
    np.testing.assert_allclose(d[4], [3.0, -6.0, 9.0])


def test_gaussian_has_the_mean_honest_norm_and_repeats_from_the_seed():
    d, _ = _poison("gaussian", HONEST + [[0.0] * 3, [0.0] * 3], malicious=[4, 5])
    mean_norm = np.mean([np.linalg.norm(u) for u in HONEST])
    assert np.linalg.norm(d[4]) == pytest.approx(mean_norm, rel=1e-5)
    assert np.linalg.norm(d[5]) == pytest.approx(mean_norm, rel=1e-5)
    assert not np.allclose(d[4], d[5])  # each party its own draw
    again, _ = _poison("gaussian", HONEST + [[0.0] * 3, [0.0] * 3], malicious=[4, 5])
    np.testing.assert_array_equal(again[4], d[4])
    other, _ = _poison("gaussian", HONEST + [[0.0] * 3, [0.0] * 3], malicious=[4, 5], server_round=2)
    assert not np.allclose(other[4], d[4])


def test_without_honest_replies_the_attackers_own_updates_stand_in():
    d, _ = _poison("ipm", [[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]], malicious=[0, 1])
    np.testing.assert_allclose(d[0], [-0.2, -0.2, -0.2], rtol=1e-6)


def test_backdoor_model_replacement_boosts_the_malicious_update():
    d, _ = _poison("backdoor", HONEST + [[1.0, 0.0, -1.0]], malicious=[4], boost=5.0)
    np.testing.assert_allclose(d[4], [5.0, 0.0, -5.0])
    p = attacks.get("backdoor").Params(name="backdoor", parties=[4])
    assert attacks.build_rule(p, 5, 0) is None  # boost 1: data poisoning only, no server rule


def test_update_space_round_trip_is_exact_for_a_zero_update():
    space = UpdateSpace(G, SETUP)
    o = _outcomes([[0.5, 0.25, -2.0]])[0]
    space.replace(o, space.vector(o.state))
    assert torch.equal(o.state["w"], G["w"] + torch.tensor([0.5, 0.25, -2.0]))


# ------------------------------------------------------------------ data poisoning


def _cfg(tiny, **attack):
    return load_config(tiny(attack=attack, partition={"scheme": "iid", "n_parties": 4}))


def _data(n=40):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 200, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 4
    dataidxs = {p: np.arange(p * 10, p * 10 + 10) for p in range(4)}
    return x, y, dataidxs


def test_the_backdoor_trigger_is_stamped_only_on_a_share_of_the_malicious_parties_images(tiny):
    cfg = _cfg(tiny, name="backdoor", parties=[1, 3], poison_fraction=0.5, target_class=2)
    x, y, dataidxs = _data()
    px, py = poison_training_set(cfg, dataidxs, x, y, 4)
    changed = sorted(
        set(torch.nonzero((px != x).flatten(1).any(1)).flatten().tolist())
        | set(torch.nonzero(py != y).flatten().tolist())
    )
    rows = attacks.get("backdoor").poisoned_rows(
        cfg.attack, {p: torch.as_tensor(dataidxs[p]) for p in (1, 3)}, cfg.seed
    )
    rows = sorted(rows.tolist())
    # half of each malicious party's 10 images, and nothing of parties 0 and 2
    assert len(rows) == 10 and sum(10 <= r < 20 for r in rows) == 5 and sum(30 <= r < 40 for r in rows) == 5
    assert set(changed) <= set(rows)
    for r in rows:
        assert int(py[r]) == 2
        for rr, cc in TRIGGER:
            assert (px[r, :, rr, cc] == 255).all()
        # away from the trigger the image is as it was
        assert torch.equal(px[r, :, 5:, :], x[r, :, 5:, :])
    untouched = [i for i in range(40) if i not in rows]
    assert torch.equal(px[untouched], x[untouched]) and torch.equal(py[untouched], y[untouched])
    # the inputs are not changed in place (the data set is shared by the process)
    assert not torch.equal(px, x)
    # the same seed draws the same images
    px2, _ = poison_training_set(cfg, dataidxs, x, y, 4)
    assert torch.equal(px, px2)


def test_label_flip_relabels_only_the_malicious_parties_source_class(tiny):
    cfg = _cfg(tiny, name="label-flip", parties=[0, 2], source_class=1, target_class=3)
    x, y, dataidxs = _data()
    px, py = poison_training_set(cfg, dataidxs, x, y, 4)
    assert px is x
    want = y.clone()
    for i in list(range(0, 10)) + list(range(20, 30)):
        if int(y[i]) == 1:
            want[i] = 3
    assert torch.equal(py, want) and int((py != y).sum()) == 6  # rows 1, 5, 9, 21, 25, 29


def test_label_flip_all_permutes_every_label_of_the_malicious_parties(tiny):
    cfg = _cfg(tiny, name="label-flip", parties=[2], mode="all")
    x, y, dataidxs = _data()
    _, py = poison_training_set(cfg, dataidxs, x, y, 4)
    assert torch.equal(py[20:30], 3 - y[20:30])
    assert torch.equal(py[:20], y[:20]) and torch.equal(py[30:], y[30:])


def test_no_malicious_party_means_no_poisoning(tiny):
    cfg = _cfg(tiny, name="backdoor", fraction=0.0)
    x, y, dataidxs = _data()
    px, py = poison_training_set(cfg, dataidxs, x, y, 4)
    assert px is x and py is y


# --------------------------------------------------------------------- success rate


def _predictor(label):
    return lambda xb: torch.full((xb.shape[0],), label, dtype=torch.int64)


def test_a_model_that_always_predicts_the_target_has_success_rate_one():
    x, y, _ = _data()
    bd = attacks.get("backdoor")
    p = bd.Params(name="backdoor", target_class=2)
    assert bd.success_rate(p, _predictor(2), x, y, 4) == 1.0
    assert bd.success_rate(p, _predictor(0), x, y, 4) == 0.0
    lf = attacks.get("label-flip")
    p = lf.Params(name="label-flip", source_class=1, target_class=3)
    assert lf.success_rate(p, _predictor(3), x, y, 4) == 1.0
    assert lf.success_rate(p, _predictor(1), x, y, 4) == 0.0


def test_the_backdoor_success_rate_counts_triggered_images_of_other_classes():
    x, y, _ = _data()
    bd = attacks.get("backdoor")
    p = bd.Params(name="backdoor", target_class=2)
    seen = []

    def predict(xb):
        seen.append(xb)
        # predicts the target for triggered images whose first pixel row... all are triggered:
        # the target for the first 6 of them, class 0 for the rest
        out = torch.zeros(xb.shape[0], dtype=torch.int64)
        out[:6] = 2
        return out

    rate = bd.success_rate(p, predict, x, y, 4)
    # 40 images, 10 of class 2 left out: 6 of 30
    assert rate == pytest.approx(6 / 30)
    assert seen[0].shape[0] == 30 and torch.equal(seen[0], stamp(x[y != 2]))


def test_label_flip_all_success_rate_leaves_fixed_points_out():
    y = torch.arange(5).repeat(2)  # 5 classes: the permutation y -> 4 - y keeps class 2
    x = torch.zeros((10, 1, 8, 8), dtype=torch.uint8)
    lf = attacks.get("label-flip")
    p = lf.Params(name="label-flip", mode="all")
    assert lf.success_rate(p, lambda xb: torch.zeros(xb.shape[0], dtype=torch.int64), x, y, 5) == pytest.approx(2 / 8)
