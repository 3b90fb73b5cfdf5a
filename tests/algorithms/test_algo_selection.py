"""Client selection (``selection.name``, strategies/selection/): uniform is fedsim's old
draw; Power-of-Choice with d = m is uniform; Power-of-Choice picks the highest losses;
Oort's utilities by hand; availability-aware selection; the refusals; a resume selects as
the uninterrupted run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import fedsim
from fedsim.client.training import PartyData, sample_losses
from fedsim.errors import ConfigError
from fedsim.util.seeding import derive
from strategies.rounds import FederationSetup
from strategies.selection import ClockView, Pool, SelectionHistory, get, uniform_draw
from strategies.selection.oort import OortParams, epsilon, utilities
from strategies.selection.powerofchoice import PowerOfChoiceParams
from strategies.strategy import FedAvgServer


def _rows(run_dir, name="clients.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


def _cohorts(run_dir) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for r in _rows(run_dir):
        if r["stage"] == "train":
            out.setdefault(r["round"], []).append(r["party"])
    return {k: sorted(v) for k, v in out.items()}


def _pool(parties, m, sizes, r=1, history=None, clock=None, probe=None) -> Pool:
    rng = np.random.default_rng(derive(0, "sample", "fit", r))
    return Pool(r, list(parties), m, rng, sizes, history or SelectionHistory(), clock, probe)


def test_uniform_is_the_strategys_own_draw():
    server = FedAvgServer()
    server.bind(FederationSetup(seed=5, node_of_party={p: 100 + p for p in range(30)}, fraction_fit=0.2))
    for r in range(1, 6):
        pool = Pool(r, list(range(30)), 6, np.random.default_rng(derive(5, "sample", "fit", r)), [1] * 30, None)
        assert get("uniform").select(None, pool) == server.sample(r, "fit", 0.2, 1) == server._train_cohort(r)
    assert uniform_draw([3, 4], 5, np.random.default_rng(0)) == [3, 4]


def test_power_of_choice_with_d_equal_m_is_uniform_selection(tiny, tmp_path):
    """Equal parties (iid, 8 x 50), m = 4 of 8: d = m trains every candidate, drawn as
    uniform draws them: the same cohorts, the same model, no probe bytes."""
    base = dict(partition={"scheme": "iid", "n_parties": 8}, federation={"rounds": 3, "fraction_fit": 0.5})
    uni = fedsim.run(tiny(**base), out=tmp_path / "uniform")
    poc = fedsim.run(tiny(**base, selection={"name": "power-of-choice", "d": 4}), out=tmp_path / "poc")
    assert _cohorts(uni.run_dir) == _cohorts(poc.run_dir) and len(_cohorts(poc.run_dir)[1]) == 4
    a = torch.load(uni.run_dir / "model.pt", weights_only=True)
    b = torch.load(poc.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["bytes_down"] for r in _rows(uni.run_dir, "metrics.jsonl")] == [
        r["bytes_down"] for r in _rows(poc.run_dir, "metrics.jsonl")
    ]


def test_power_of_choice_probes_d_candidates_and_trains_the_highest_losses(tiny, tmp_path):
    """d = 2m (the default): 4 candidates of 8 get the model in a query (their bytes count:
    the round sends 2 + 4 models), the 2 with the highest F_k(w^t) train."""
    base = dict(partition={"scheme": "iid", "n_parties": 8}, federation={"rounds": 1, "fraction_fit": 0.25})
    uni = fedsim.run(tiny(**base), out=tmp_path / "uniform")
    poc = fedsim.run(tiny(**base, selection={"name": "power-of-choice"}), out=tmp_path / "poc")
    down_u, down_p = (
        _rows(uni.run_dir, "metrics.jsonl")[0]["bytes_down"],
        _rows(poc.run_dir, "metrics.jsonl")[0]["bytes_down"],
    )
    assert down_p / down_u == pytest.approx(3.0, rel=0.01)
    losses = {p: 0.1 * p for p in range(8)}
    pool = _pool(range(8), 2, [50] * 8, probe=lambda found: {p: losses[p] for p in found})
    found = uniform_draw(list(range(8)), 4, np.random.default_rng(derive(0, "sample", "fit", 1)))
    assert get("power-of-choice").select(PowerOfChoiceParams(name="power-of-choice"), pool) == found[2:]


def test_power_of_choice_samples_candidates_by_data_size():
    """p_k = n_k / n: a party with no samples is never a candidate, and with d = 3 of
    sizes (0, 0, 5, 5, 5) the three holders are the candidates."""
    pool = _pool(range(5), 1, [0, 0, 5, 5, 5], probe=lambda found: {p: -p for p in found})
    assert get("power-of-choice").select(PowerOfChoiceParams(name="power-of-choice", d=3), pool) == [2]


def test_oorts_utilities_equal_a_hand_computation():
    """Round R = 3, parties 0..3 with sizes 10, 20, 30, 40; 0, 1, 2 trained (last in rounds
    1, 2, 2) with sqrt(mean Loss^2) 1.0, 0.5, 2.0 and durations 10, 50, 100 s; party 3's
    expected duration 20 s. Statistical utility |B| rms = 10, 10, 60, normalised (0, 0, 1);
    bonus sqrt(0.1 ln 3 / L); T = the 30th percentile of (10, 20, 50, 100) = 20; party 1
    times (20/50)^2, party 2 times (20/100)^2."""
    hist = SelectionHistory(
        loss={0: 1.0, 1: 0.5, 2: 2.0},
        loss_rms={0: 1.0, 1: 0.5, 2: 2.0},
        round={0: 1, 1: 2, 2: 2},
        count={0: 1, 1: 1, 2: 1},
        duration_s={0: 10.0, 1: 50.0, 2: 100.0},
    )
    clock = ClockView(0.0, lambda p: 20.0, lambda p: math.inf)
    u = utilities(OortParams(name="oort"), _pool(range(4), 2, [10, 20, 30, 40], r=3, history=hist, clock=clock))
    bonus = [math.sqrt(0.1 * math.log(3) / last) for last in (1, 2, 2)]
    hand = {0: (0 + bonus[0]) * 1, 1: (0 + bonus[1]) * (20 / 50) ** 2, 2: (1 + bonus[2]) * (20 / 100) ** 2}
    assert u.keys() == hand.keys() and all(u[p] == pytest.approx(hand[p], rel=1e-12) for p in hand)
    assert epsilon(OortParams(name="oort"), 1) == 0.9
    assert epsilon(OortParams(name="oort"), 10) == pytest.approx(0.9 * 0.98**9)
    assert epsilon(OortParams(name="oort"), 200) == 0.3


def test_oort_explores_by_size_and_exploits_by_utility():
    """m = 4, epsilon 0.5 (exploration 0.5): 2 explored parties by utility (the two of 0, 1, 2
    with the highest U above the cut-off), 2 unexplored (3..9) among the largest."""
    hist = SelectionHistory(
        loss={0: 1.0, 1: 1.0, 2: 5.0},
        round={0: 1, 1: 1, 2: 1},
        count={0: 1, 1: 1, 2: 1},
        duration_s={0: 1.0, 1: 1.0, 2: 1.0},
    )
    sizes = [10, 10, 10, 1, 1, 1, 1, 1, 100, 100]
    clock = ClockView(0.0, lambda p: 1.0, lambda p: math.inf)
    params = OortParams(name="oort", exploration=0.5, cut_off=1.0, sample_window=1.0)
    chosen = get("oort").select(params, _pool(range(10), 4, sizes, r=2, history=hist, clock=clock))
    assert len(chosen) == 4 and 2 in chosen and {8, 9} <= set(chosen)


def test_available_prefers_parties_that_stay_online_for_their_round():
    """Parties 0..5 with 10 s rounds; online for 5, 12, 30, 8, 15, inf s: 1, 2, 4, 5 finish."""
    left = [5.0, 12.0, 30.0, 8.0, 15.0, math.inf]
    clock = ClockView(100.0, lambda p: 10.0, lambda p: 100.0 + left[p])
    two = get("available").select(None, _pool(range(6), 2, [1] * 6, clock=clock))
    assert len(two) == 2 and set(two) <= {1, 2, 4, 5}
    assert get("available").select(None, _pool(range(6), 5, [1] * 6, clock=clock)) == [1, 2, 3, 4, 5]


def test_sample_losses_by_hand():
    """logits (x, 0) of x = 0, 1, 2 with labels 0, 1, 0: losses ln 2, ln(1 + e), ln(1 + e^-2)."""
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0], [0.0]]))
        model.bias.zero_()
    data = PartyData(torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([0, 1, 0]), torch.arange(3), None, None)
    mean, rms = sample_losses(model, data, 2, torch.device("cpu"))
    each = [math.log(2), math.log(1 + math.e), math.log(1 + math.exp(-2))]
    assert mean == pytest.approx(sum(each) / 3, rel=1e-6)
    assert rms == pytest.approx(math.sqrt(sum(v * v for v in each) / 3), rel=1e-6)


def test_selectors_that_cannot_run_are_refused_with_one_line(tiny):
    with pytest.raises(ConfigError, match=r"^selection.name oort reads the simulated clock"):
        fedsim.load_config(tiny(selection={"name": "oort"}))
    dp = {"mode": "central-fixed", "noise_multiplier": 0.5, "clipping_norm": 1.0}
    with pytest.raises(ConfigError, match=r"^selection.name power-of-choice with client-level differential privacy"):
        fedsim.load_config(tiny(selection={"name": "power-of-choice"}, privacy=dp))
    with pytest.raises(ConfigError, match=r"'selection.d' = -1 is out of range"):
        fedsim.load_config(tiny(selection={"name": "power-of-choice", "d": -1}))


def test_an_oort_run_resumed_selects_as_the_uninterrupted_run(tiny, tmp_path):
    """Oort's history (losses, rounds, durations) is checkpointed: 2 rounds, then 2 more on
    resume, give the cohorts and the model of 4 rounds in one go."""
    cfg = tiny(
        partition={"scheme": "iid", "n_parties": 8},
        federation={"rounds": 4, "fraction_fit": 0.25},
        train={"epochs": 1},
        selection={"name": "oort"},
        system={"source": "synthetic"},
    )
    whole = fedsim.run(cfg, out=tmp_path / "whole")
    fedsim.run({**cfg, "federation": {**cfg["federation"], "rounds": 2}}, out=tmp_path / "two")
    done = fedsim.run(cfg, out=tmp_path / "two", resume=True)
    assert _cohorts(whole.run_dir) == _cohorts(done.run_dir)
    a = torch.load(whole.run_dir / "model.pt", weights_only=True)
    b = torch.load(done.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    explored = {p for c in _cohorts(whole.run_dir).values() for p in c}
    assert len(explored) > 2  # rounds 1 and 2 explore (epsilon 0.9): more than one cohort's parties
