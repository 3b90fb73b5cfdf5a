"""The simulated clock's numbers: FedScale's formula by hand for 1,000 synthetic parties,
when a round ends (deadline, over-selection, offline parties), availability, and the
checks of the device profiles."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from fedsim.system.clock import ReplyTime, settle
from fedsim.system.profiles import ProfileError, make_profiles
from fedsim.system.run import SimulatedClock
from fedsim.system.sources import get
from fedsim.system.sources.synthetic import SyntheticParams
from strategies.rounds import ClientOutcome
from strategies.selection import uniform_draw


def test_fedscale_formula_by_hand_for_1000_synthetic_parties():
    params = SyntheticParams(source="synthetic", augmentation_factor=3.0)
    profiles = get("synthetic").profiles(params, 1000, seed=7)
    clock = SimulatedClock(profiles, params, batch_size=32, fraction_fit=1.0, min_fit_clients=1, seed=7)
    rng = np.random.default_rng(0)
    steps = rng.integers(1, 200, 1000)
    down = rng.integers(10_000, 5_000_000, 1000)
    up = rng.integers(10_000, 5_000_000, 1000)
    worst = 0.0
    for p in range(1000):
        o = ClientOutcome(p, p, 10, {"steps": int(steps[p])}, bytes_up=int(up[p]), bytes_down=int(down[p]))
        t = clock.reply_time(o)
        # by hand: FedScale's exe_cost, kbit = 1024 bits
        compute = 3.0 * 32 * int(steps[p]) * float(profiles.ms_per_sample[p]) / 1000.0
        download = int(down[p]) * 8 / 1024 / float(profiles.download_kbps[p])
        upload = int(up[p]) * 8 / 1024 / float(profiles.upload_kbps[p])
        for got, want in ((t.compute_s, compute), (t.download_s, download), (t.upload_s, upload)):
            worst = max(worst, abs(got - want))
        assert t.total_s == pytest.approx(compute + download + upload, abs=1e-9, rel=0)
    assert worst <= 1e-9
    # one reply in numbers: 20 ms/sample, 6 steps of 32, 63,266 bytes up at 1,500 kbit/s
    t = SimulatedClock(make_profiles(1, [20.0], [1500.0], [6000.0], "t"), params, 32, 1.0, 1, 0).reply_time(
        ClientOutcome(0, 0, 1, {"steps": 6}, bytes_up=63266, bytes_down=63266)
    )
    assert t.compute_s == pytest.approx(11.52, abs=1e-12)
    assert t.upload_s == pytest.approx(0.32951041666666664, abs=1e-12)
    assert t.download_s == pytest.approx(0.08237760416666666, abs=1e-12)


def test_synthetic_speeds_are_heavy_tailed_and_seeded():
    params = SyntheticParams(source="synthetic", compute_ms=20.0, compute_spread=0.7)
    a = get("synthetic").profiles(params, 10_000, seed=1)
    b = get("synthetic").profiles(params, 10_000, seed=1)
    assert np.array_equal(a.ms_per_sample, b.ms_per_sample)
    assert np.median(a.ms_per_sample) == pytest.approx(20.0, rel=0.03)
    assert np.std(np.log(a.ms_per_sample)) == pytest.approx(0.7, rel=0.03)
    assert a.ms_per_sample.mean() > np.median(a.ms_per_sample)  # right tail
    assert a.availability is None


def _replies(*totals):
    return [ReplyTime(p, 0.0, t, 0.0) for p, t in enumerate(totals)]


def test_a_round_ends_with_the_last_reply_it_aggregates():
    t = settle(1, 100.0, _replies(5.0, 9.0, 7.0), None, None, {})
    assert [r.status for r in t.replies] == ["ok", "ok", "ok"] and t.end_s == 109.0


def test_a_deadline_drops_late_replies_and_the_round_waits_until_it():
    t = settle(1, 0.0, _replies(5.0, 9.0, 7.0), None, 8.0, {})
    assert [r.status for r in t.replies] == ["ok", "late", "ok"] and t.end_s == 8.0
    inf = settle(1, 0.0, _replies(5.0, 9.0, 7.0), None, math.inf, {})
    none = settle(1, 0.0, _replies(5.0, 9.0, 7.0), None, None, {})
    assert inf == none


def test_over_selection_keeps_the_first_k_and_ends_at_the_kth():
    t = settle(1, 0.0, _replies(5.0, 9.0, 7.0, 6.0), 2, None, {})
    assert [r.status for r in t.replies] == ["ok", "surplus", "surplus", "ok"] and t.end_s == 6.0
    # ties go to the lower party id
    t = settle(1, 0.0, _replies(3.0, 3.0, 3.0), 2, None, {})
    assert [r.status for r in t.replies] == ["ok", "ok", "surplus"]
    # K = all replies is no over-selection
    assert settle(1, 0.0, _replies(5.0, 9.0), 2, None, {}) == settle(1, 0.0, _replies(5.0, 9.0), None, None, {})


def test_a_party_that_goes_offline_before_it_finishes_drops_out():
    t = settle(1, 10.0, _replies(5.0, 9.0), None, None, {1: 15.0})
    assert [r.status for r in t.replies] == ["ok", "offline"] and t.end_s == 15.0


def test_availability_online_until_and_wrapping():
    p = make_profiles(
        3,
        [1.0] * 3,
        [1.0] * 3,
        [1.0] * 3,
        "t",
        [[(0.0, 10.0), (10.0, 20.0), (50.0, 100.0)], [(30.0, 40.0)], None],
        [100.0, 100.0, 100.0],
    )
    a = p.availability
    assert a.online(5.0).tolist() == [True, False, True]
    assert a.online(135.0).tolist() == [False, True, True]
    assert a.online_until(0, 5.0) == 20.0  # touching intervals are one stretch
    assert a.online_until(0, 60.0) == 120.0  # [50, 100) then [0, 20) of the next period
    assert a.online_until(1, 135.0) == 140.0
    assert a.online_until(2, 5.0) == math.inf
    assert a.next_online(25.0) == 25.0  # party 2 is always online
    q = make_profiles(2, [1.0] * 2, [1.0] * 2, [1.0] * 2, "t", [[(30.0, 40.0)], [(60.0, 70.0)]], [100.0, 100.0])
    assert q.availability.next_online(45.0) == 60.0 and q.availability.next_online(75.0) == 130.0


def test_the_cohort_is_drawn_among_online_parties_only():
    params = SyntheticParams(source="synthetic", duty_cycle=0.3, period_s=1000.0, over_selection=1.3)
    profiles = get("synthetic").profiles(params, 1000, seed=3)
    clock = SimulatedClock(profiles, params, 32, 0.1, 1, seed=3)
    for r, now in enumerate([0.0, 123.0, 777.0, 5000.5], start=1):
        clock.now = now
        candidates, m, view = clock.candidates(r, list(range(1000)), 100)
        cohort = uniform_draw(candidates, m, np.random.default_rng(r))
        online = profiles.availability.online(now)
        assert cohort and all(online[p] for p in cohort) and view.start_s == now
        assert len(candidates) == int(online.sum()) and sorted(candidates) == candidates
        assert len(cohort) == m == min(int(online.sum()), math.ceil(100 * 1.3))


def test_no_over_selection_and_always_online_leave_the_strategys_draw():
    params = SyntheticParams(source="synthetic")
    clock = SimulatedClock(get("synthetic").profiles(params, 10, 0), params, 32, 0.5, 1, 0)
    candidates, m, view = clock.candidates(1, list(range(10)), 5)
    assert (candidates, m, view.online_until(3)) == (list(range(10)), 5, math.inf)


@pytest.mark.parametrize(
    "columns,intervals,match",
    [
        (([1.0] * 3, [1.0] * 3, [1.0] * 3), None, r"gives 3 device profiles; the federation has 4 parties"),
        (([1.0, -2.0, 1.0, 1.0], [1.0] * 4, [1.0] * 4), None, r"ms_per_sample of party 1 is -2.0; allowed: a finite"),
        (([1.0] * 4, [1.0] * 4, [1.0, 1.0, 0.0, 1.0]), None, r"download_kbps of party 2 is 0.0"),
        (
            ([1.0] * 4, [1.0] * 4, [1.0] * 4),
            [None, [(0.0, 10.0), (5.0, 20.0)], None, None],
            r"\[0, 10\) and \[5, 20\) of party 1 overlap; allowed: sorted, disjoint",
        ),
    ],
)
def test_bad_profiles_are_one_line_naming_what_is_allowed(columns, intervals, match):
    with pytest.raises(ProfileError, match=match) as err:
        make_profiles(4, *columns, "t", intervals, [100.0] * 4 if intervals else None)
    assert "\n" not in str(err.value)


def test_the_none_source_refuses_the_clock_keys():
    cfg = SimpleNamespace(system=SimpleNamespace(source="none", round_deadline=5.0, over_selection=1.0))
    cfg.system.augmentation_factor = 3.0
    assert "system.round_deadline' needs the simulated clock" in get("none").check(cfg)


def test_a_table_reads_the_same_as_csv_json_and_parquet(tmp_path):
    """The ``file`` source's three formats give the same rows (Parquet with the hf extra)."""
    from fedsim.system.traces import read_table

    rows = [{"ms_per_sample": 3.0 + i, "upload_kbps": 500.0 * (i + 1), "download_kbps": 900.0} for i in range(3)]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    (tmp_path / "t.csv").write_text(
        "ms_per_sample,upload_kbps,download_kbps\n"
        + "".join(f"{r['ms_per_sample']},{r['upload_kbps']},900.0\n" for r in rows)
    )
    as_float = [{k: float(v) for k, v in r.items()} for r in read_table(tmp_path / "t.csv")]
    assert as_float == rows == read_table(tmp_path / "t.json")
    pd = pytest.importorskip("pandas", reason="Parquet tables need the hf extra: pip install -e '.[hf]'")
    pytest.importorskip("pyarrow", reason="Parquet tables need the hf extra: pip install -e '.[hf]'")
    pd.DataFrame(rows).to_parquet(tmp_path / "t.parquet")
    assert read_table(tmp_path / "t.parquet") == rows
