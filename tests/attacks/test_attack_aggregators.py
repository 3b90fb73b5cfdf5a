"""Robust aggregators and defences against hand computations over fixed updates, with the
malicious replies an attack made.

The replies go through the server's real path (``FedsimStrategy.aggregate_train``):
screening, the reply rules (the attack's model poisoning, then the defence), the
algorithm's aggregate (Flower's classes for Krum, Multi-Krum, Bulyan and the median).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

import attacks
import strategies
from fedsim.util import flower_compat as fc
from strategies import defences
from strategies.arrays import state_to_record
from strategies.strategy import FederationSetup, RoundLog

G = OrderedDict([("w", torch.zeros(2)), ("steps", torch.tensor(3, dtype=torch.int64))])


def _state(w, steps=5):
    return OrderedDict([("w", torch.tensor(w, dtype=torch.float32)), ("steps", torch.tensor(steps))])


def _reply(party: int, state, n: int) -> Message:
    fc.set_task_identity(1)
    msg = Message(RecordDict(), dst_node_id=100 + party, message_type="train")
    fc.set_message_id(msg, f"m{party}")
    content = RecordDict({"arrays": state_to_record(state), "metrics": MetricRecord({"num-examples": n})})
    return Message(content, reply_to=msg)


def aggregate(name, states, *, params=None, rules=(), weights=None, global_state=G, rounds=1, log=None):
    """The new global ``w`` of algorithm ``name`` over ``states`` (party i sends states[i])."""
    p = params or {}
    strat = strategies.build(strategies.make_params({"name": name, **p}), rules)
    n = len(states)
    strat.bind(FederationSetup(seed=0, node_of_party={i: 100 + i for i in range(n)}, param_keys=frozenset({"w"})))
    weights = weights or [10] * n
    out = None
    for rnd in range(1, rounds + 1):
        strat.round_log = RoundLog(round=rnd, global_state=OrderedDict(global_state), sampled=list(range(n)))
        strat.aggregate_train(rnd, [_reply(i, s, weights[i]) for i, s in enumerate(states)])
        out = strat.round_log
        if log is not None:
            log.append(out)
    return out.agg_state["w"].double().numpy(), out


# five replies: four honest updates and one malicious party (4) whose honest update
# [2, 2] the sign-flip attack (s = 5) turns into [-10, -10]
HONEST = [[1, 0], [0, 1], [1, 1], [3, 1]]
OWN = [2, 2]


def _signflip_rule(scale=5.0, parties=(4,)):
    params = attacks.get("sign-flip").Params(name="sign-flip", parties=list(parties), scale=scale)
    return attacks.build_rule(params, n_parties=5, seed=0)


def test_sign_flip_replaces_only_the_malicious_reply():
    _, rl = aggregate("fedavg", [_state(w) for w in HONEST + [OWN]], rules=[_signflip_rule()])
    sent = {o.party: o.state["w"].tolist() for o in rl.outcomes}
    assert sent == {0: [1, 0], 1: [0, 1], 2: [1, 1], 3: [3, 1], 4: [-10, -10]}
    # buffers are not updates: the malicious reply keeps the step counter it trained
    assert int(rl.outcomes[4].state["steps"]) == 5


def test_fedavg_follows_the_malicious_update():
    w, _ = aggregate("fedavg", [_state(w) for w in HONEST + [OWN]], rules=[_signflip_rule()])
    # equal weights: the mean of [1,0], [0,1], [1,1], [3,1], [-10,-10]
    np.testing.assert_allclose(w, [(1 + 0 + 1 + 3 - 10) / 5, (0 + 1 + 1 + 1 - 10) / 5], rtol=1e-6)


def test_krum_picks_the_reply_with_the_smallest_score_by_hand():
    # squared distances: a-b 2, a-c 1, a-d 5, b-c 1, b-d 9, c-d 4, a-e 221, b-e 221, c-e 242, d-e 290;
    # f = 1, n = 5: each score sums the n - f - 2 = 2 nearest: a 1+2=3, b 1+2=3, c 1+1=2, d 4+5=9,
    # e 221+221=442: Krum keeps c = [1, 1]
    w, _ = aggregate("krum", [_state(w) for w in HONEST + [OWN]], params={"num_malicious": 1}, rules=[_signflip_rule()])
    np.testing.assert_array_equal(w, [1.0, 1.0])


def test_krum_picks_the_malicious_reply_when_it_sits_in_the_middle():
    # a malicious reply at the honest replies' centroid wins Krum: by hand, scores with f = 1
    # (2 nearest): [0,0]: 1+1=2 (to [1,0] and [0,1]); [1,0]: 1+2=3; [0,1]: 1+2=3; [-1,0]: 1+2=3; [0,-1]: 3
    states = [_state(w) for w in ([1, 0], [0, 1], [-1, 0], [0, -1], [0, 0])]
    w, _ = aggregate("krum", states, params={"num_malicious": 1})
    np.testing.assert_array_equal(w, [0.0, 0.0])


def test_the_median_is_coordinate_wise_by_hand():
    w, _ = aggregate("fedmedian", [_state(w) for w in HONEST + [OWN]], rules=[_signflip_rule()])
    # x: -10, 0, 1, 1, 3 -> 1; y: -10, 0, 1, 1, 1 -> 1
    np.testing.assert_array_equal(w, [1.0, 1.0])
    # a median that is no single reply: x: -9, 0, 1, 2, 4 -> 1; y: 1, 3, 4, 5, 9 -> 4
    w, _ = aggregate("fedmedian", [_state(w) for w in ([1, 5], [2, 3], [4, 4], [-9, 9], [0, 1])])
    np.testing.assert_array_equal(w, [1.0, 4.0])


def test_the_trimmed_mean_drops_the_malicious_extreme_by_hand():
    # beta = 0.2 of 5 replies trims int(0.2 x 5) = 1 value per side and coordinate:
    # x: -10, [0, 1, 1], 3 -> 2/3; y: -10, [0, 1, 1], 1 -> 2/3
    w, _ = aggregate("fedtrimmedavg", [_state(w) for w in HONEST + [OWN]], rules=[_signflip_rule()])
    np.testing.assert_allclose(w, [2 / 3, 2 / 3], rtol=1e-6)


def test_multi_krum_averages_the_n_minus_f_best_by_hand():
    # the scores of the Krum test: c 2, a 3, b 3, d 9, e 442; m = n - f = 4 keeps a, b, c, d
    w, rl = aggregate(
        "multi-krum", [_state(w) for w in HONEST + [OWN]], params={"num_malicious": 1}, rules=[_signflip_rule()]
    )
    np.testing.assert_allclose(w, [(1 + 0 + 1 + 3) / 4, (0 + 1 + 1 + 1) / 4], rtol=1e-6)
    assert rl.server_metrics["multikrum_selected"] == 4
    # m = 2 keeps c and one of a, b (equal scores; Flower's argsort keeps the first, a)
    w, _ = aggregate("multi-krum", [_state(w) for w in HONEST + [OWN]], params={"num_malicious": 1, "num_selected": 2})
    np.testing.assert_allclose(w, [1.0, 0.5], rtol=1e-6)


def test_krum_distances_do_not_cancel_when_updates_are_small_next_to_the_weights():
    # weights ~10, updates ~1e-3: ||x||^2 + ||y||^2 - 2 x.y in float32 (Flower's
    # compute_distances) cancels; fedsim sums (w_i - w_j)^2 in float64
    from flwr.serverapp.strategy.multikrum import compute_distances

    from strategies.arrays import array_from_numpy
    from strategies.robust import squared_distances

    rng = np.random.default_rng(0)
    w = (rng.standard_normal(50_000) * 10).astype(np.float32)
    states = [
        OrderedDict(w=torch.from_numpy(w + rng.standard_normal(50_000).astype(np.float32) * 1e-3)) for _ in range(5)
    ]
    flat = np.stack([s["w"].numpy().astype(np.float64) for s in states])
    brute = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(-1)
    off = ~np.eye(5, dtype=bool)
    flower = compute_distances([ArrayRecord({"w": array_from_numpy(s["w"].numpy())}) for s in states])
    assert np.max(np.abs(flower[off] - brute[off]) / brute[off]) > 0.1  # Flower's is off by more than 10%
    ours = squared_distances(states, ["w"]).numpy()
    np.testing.assert_allclose(ours[off], brute[off], rtol=1e-9)
    assert (np.diag(ours) == 0).all()


def test_krum_never_counts_a_reply_as_its_own_neighbour():
    from strategies.robust import krum_scores

    # a reply's own entry made smaller than every other (Flower's negative self-distances):
    # the score still sums the n - f - 2 = 2 nearest *other* replies
    dist = torch.tensor([[-5.0, 1, 2, 9], [1, -5.0, 4, 16], [2, 4, -5.0, 25], [9, 16, 25, -5.0]], dtype=torch.float64)
    np.testing.assert_array_equal(krum_scores(dist, 0).numpy(), [3, 5, 6, 25])


def _krum_scores(vectors: np.ndarray, idx: list[int], f: int) -> list[float]:
    """Krum's scores of the replies ``idx`` among themselves: the n - f - 2 nearest others."""
    k = min(max(len(idx) - f - 2, 1), len(idx) - 1)
    return [sum(sorted(float(((vectors[i] - vectors[j]) ** 2).sum()) for j in idx if j != i)[:k]) for i in idx]


def _bulyan_by_hand(vectors: np.ndarray, f: int, iterate: bool = True) -> np.ndarray:
    """El Mhamdi et al. 2018: theta = n - 2f replies chosen by Krum applied again and again
    to the replies not chosen yet (``iterate=False``: the theta best scores of one pass,
    Flower's shortcut); then per coordinate the mean of the beta = theta - 2f values
    closest to the coordinate-wise median. Ties go to the lower index."""
    n = len(vectors)
    theta, beta = n - 2 * f, n - 4 * f
    if iterate:
        remaining, chosen = list(range(n)), []
        while len(chosen) < theta:
            scores = _krum_scores(vectors, remaining, f)
            chosen.append(remaining.pop(scores.index(min(scores))))
    else:
        chosen = list(np.argsort(_krum_scores(vectors, list(range(n)), f), kind="stable")[:theta])
    picked = vectors[sorted(chosen)]
    med = np.median(picked, axis=0)
    out = []
    for j in range(vectors.shape[1]):
        col = picked[:, j]
        out.append(col[np.argsort(np.abs(col - med[j]), kind="stable")[:beta]].mean())
    return np.array(out)


def test_bulyan_against_its_definition():
    honest = [[1, 0], [0, 1], [1, 1], [3, 1], [2, -1], [0.5, 0.5]]
    states = [_state(w) for w in honest + [OWN]]
    params = attacks.get("sign-flip").Params(name="sign-flip", parties=[6], scale=5.0)
    rule = attacks.build_rule(params, n_parties=7, seed=0)
    w, rl = aggregate("bulyan", states, params={"num_malicious": 1}, rules=[rule])
    sent = np.array(honest + [[-10, -10]], dtype=float)
    np.testing.assert_allclose(w, _bulyan_by_hand(sent, 1), rtol=1e-6)
    # the one-pass selection (Flower's Bulyan) differs here: 1.0 against 0.5 in y
    assert not np.allclose(_bulyan_by_hand(sent, 1), _bulyan_by_hand(sent, 1, iterate=False))
    assert rl.server_metrics["robust_f"] == 1


def test_bulyan_selects_by_repeated_krum_by_hand():
    # 1-D replies 3, 1, 0, -2, -2, -4, -4 (parties 0-6), f = 1: theta = 5, beta = 3.
    # One pass (4 nearest each): scores 63, 23, 18, 12, 12, 24, 24 -> {1, 2, 3, 4, 5}.
    # Repeated Krum over what is left: pick 3 (12); of {0,1,2,4,5,6} with 3 neighbours:
    # 38, 14, 14, 12, 20, 20 -> 4; of {0,1,2,5,6} with 2: 13, 5, 10, 16, 16 -> 1;
    # of {0,2,5,6} with 1: 9, 9, 0, 0 -> 5; of {0,2,6} with 1: 9, 9, 16 -> 0.
    # Chosen 3, 1, -2, -2, -4: median -2, the 3 closest -2, -2, -4: mean -8/3
    # (one pass: 1, 0, -2, -2, -4 -> -2, -2, 0: mean -4/3)
    values = [3, 1, 0, -2, -2, -4, -4]
    w, _ = aggregate("bulyan", [_state([v, 0]) for v in values], params={"num_malicious": 1})
    np.testing.assert_allclose(w, [-8 / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(_bulyan_by_hand(np.array([[v] for v in values], float), 1, iterate=False), [-4 / 3])


def test_bulyan_matches_the_definition_on_random_replies_where_one_pass_differs():
    rng = np.random.default_rng(3)
    vectors = (rng.standard_normal((11, 6)) * rng.choice([1.0, 5.0], size=(11, 1))).astype(np.float32)
    w, _ = aggregate(
        "bulyan", [_state(v.tolist()) for v in vectors], params={"num_malicious": 2}, global_state=_state([0.0] * 6)
    )
    exact = _bulyan_by_hand(vectors.astype(np.float64), 2)
    np.testing.assert_allclose(w, exact, rtol=1e-6, atol=1e-7)
    assert not np.allclose(exact, _bulyan_by_hand(vectors.astype(np.float64), 2, iterate=False))


def test_bulyan_with_too_few_replies_keeps_the_global_model():
    w, rl = aggregate("bulyan", [_state(w) for w in HONEST], params={"num_malicious": 1})
    np.testing.assert_array_equal(w, [0.0, 0.0])
    assert rl.server_metrics["bulyan_skipped"] == 1.0


# ------------------------------------------------------------------------ defences


def _defence(name, **params):
    cls = defences.get(name).Params
    return defences.build_rule(cls(name=name, **params))


# norms 0.625, 1.25, 3.75, 12.5: dyadic numbers, exact in float32 (so is the global model below)
UPDATES = [[0.375, 0.5], [0.75, 1.0], [2.25, 3.0], [-7.5, 10.0]]


def test_norm_bounding_leaves_short_updates_and_scales_long_ones_exactly():
    g = OrderedDict([("w", torch.tensor([0.5, -0.25])), ("steps", torch.tensor(0))])
    states = [_state([0.5 + a, -0.25 + b]) for a, b in UPDATES]
    _, rl = aggregate("fedavg", states, rules=[_defence("norm-bound", norm_bound=1.25)], global_state=g)
    out = [o.state["w"] for o in rl.outcomes]
    # at or under the bound: the reply as sent, bit for bit
    assert torch.equal(out[0], states[0]["w"]) and torch.equal(out[1], states[1]["w"])
    # above: d * M / ||d||, computed in float64 from the float32 reply
    for i in (2, 3):
        d = states[i]["w"].double() - g["w"].double()
        want = (g["w"].double() + (1.25 / float(d.norm())) * d).float()
        assert torch.equal(out[i], want)
        assert float((out[i].double() - g["w"].double()).norm()) == pytest.approx(1.25, abs=1e-6)
    assert rl.server_metrics["defence_norm_bound"] == 1.25 and rl.server_metrics["defence_clipped"] == 2


def test_norm_bounding_by_default_bounds_at_the_median_norm():
    states = [_state(u) for u in UPDATES]
    w, rl = aggregate("fedavg", states, rules=[_defence("norm-bound")])
    # median of 0.625, 1.25, 3.75, 12.5 = 2.5: the two long updates are scaled to norm 2.5
    assert rl.server_metrics["defence_norm_bound"] == 2.5
    scaled = [[0.375, 0.5], [0.75, 1.0], [1.5, 2.0], [-1.5, 2.0]]
    np.testing.assert_allclose(w, np.mean(scaled, axis=0), rtol=1e-6)


def test_norm_bounding_after_the_attack_bounds_the_malicious_update():
    w, rl = aggregate(
        "fedavg", [_state(w) for w in HONEST + [OWN]], rules=[_signflip_rule(), _defence("norm-bound", norm_bound=2.0)]
    )
    mal = rl.outcomes[4].state["w"].double().numpy()
    np.testing.assert_allclose(mal, [-2 / math.sqrt(2), -2 / math.sqrt(2)], rtol=1e-6)
    # [3, 1] (norm sqrt(10)) is bounded too; [1, 0], [0, 1], [1, 1] are not
    three = np.array([3, 1]) * 2 / math.sqrt(10)
    want = (np.array([1, 0]) + [0, 1] + [1, 1] + three + mal) / 5
    np.testing.assert_allclose(w, want, rtol=1e-6)


def test_centred_clipping_by_hand_over_two_rounds():
    rule = _defence("centred-clip", radius=1.0)
    log: list = []
    states = [_state(u) for u in UPDATES]
    aggregate("fedavg", states, rules=[rule], weights=[10, 10, 10, 10], rounds=2, log=log)
    # round 1: centre 0; clipped updates [0.375, 0.5], [0.6, 0.8], [0.6, 0.8], [-0.6, 0.8]
    r1 = np.mean([[0.375, 0.5], [0.6, 0.8], [0.6, 0.8], [-0.6, 0.8]], axis=0)
    np.testing.assert_allclose(log[0].agg_state["w"].double().numpy(), r1, rtol=1e-6)
    # round 2 (same replies, same global model): the centre is round 1's aggregate update
    v = r1
    clipped = []
    for u in UPDATES:
        diff = np.array(u) - v
        clipped.append(v + diff * min(1.0, 1.0 / np.linalg.norm(diff)))
    np.testing.assert_allclose(log[1].agg_state["w"].double().numpy(), np.mean(clipped, axis=0), rtol=1e-5)
    np.testing.assert_allclose(rule.centre.double().numpy(), np.mean(clipped, axis=0), rtol=1e-5)


def test_centred_clipping_iterations_move_the_centre_first():
    rule = _defence("centred-clip", radius=1.0, iterations=2)
    w, _ = aggregate("fedavg", [_state(u) for u in UPDATES], rules=[rule])
    v = np.zeros(2)
    for _ in range(2):
        clipped = [v + (np.array(u) - v) * min(1.0, 1.0 / np.linalg.norm(np.array(u) - v)) for u in UPDATES]
        v = np.mean(clipped, axis=0)
    np.testing.assert_allclose(w, v, rtol=1e-5)


def test_centred_clipping_state_is_checkpointed_with_the_strategy():
    rule = _defence("centred-clip", radius=1.0)
    _, _ = aggregate("fedavg", [_state(u) for u in UPDATES], rules=[rule])
    strat = strategies.build(strategies.make_params({"name": "fedavg"}), [rule])
    saved = strat.state_dict()
    assert list(saved) == ["defence.centre"]
    fresh = _defence("centred-clip", radius=1.0)
    strat = strategies.build(strategies.make_params({"name": "fedavg"}), [fresh])
    strat.load_state_dict(saved)
    assert torch.equal(fresh.centre, rule.centre)
