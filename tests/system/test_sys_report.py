"""Simulated time in the sweep's tables and report: summary.csv's time columns, the
time-to-accuracy table recomputed by hand, and the accuracy-vs-simulated-time figure."""

from __future__ import annotations

import re

import pytest

from fedsim.report.clock import time_lines
from fedsim.sweeps import Factor, Setting, make_table, read_summary_csv, time_columns, to_csv
from fedsim.system.profiles import make_profiles
from fedsim.system.summary import quartile_accuracy

SUMMARY = {
    "test_accuracy": 0.8,
    "sim_time_s": 7200.0,
    "time_to_accuracy": {"0.5": {"round": 3, "sim_time_s": 1800.0}, "0.9": None},
    "participation": {"slow_quartile_share": 0.1},
}


def test_time_columns_of_a_summary():
    assert time_columns(SUMMARY) == {
        "sim_time_s": 7200.0,
        "slow_quartile_share": 0.1,
        "tta_0.5_round": 3,
        "tta_0.5_s": 1800.0,
        "tta_0.9_round": None,
        "tta_0.9_s": None,
    }
    # without a clock: the round only; with neither, nothing
    assert time_columns({"time_to_accuracy": {"0.5": {"round": 2, "sim_time_s": None}}}) == {"tta_0.5_round": 2}
    assert time_columns({"test_accuracy": 0.5}) == {}


def test_the_time_table_by_hand(tmp_path):
    settings = (Setting("none", {"system.round_deadline": None}), Setting("60", {"system.round_deadline": 60.0}))
    factor = Factor("system.round_deadline", "deadline", settings)
    rows = []
    for label, sims, ttas, slow in (
        ("none", (7200.0, 10800.0), (1800.0, 3600.0), (0.25, 0.25)),
        ("60", (3600.0, 3600.0), (900.0, None), (0.1, 0.0)),
    ):
        for seed, (sim, tta, sl) in enumerate(zip(sims, ttas, slow, strict=True)):
            s = {**SUMMARY, "sim_time_s": sim, "participation": {"slow_quartile_share": sl}}
            s["time_to_accuracy"] = {"0.5": None if tta is None else {"round": 1, "sim_time_s": tta}}
            rows.append({"system.round_deadline": label, "seed": seed, "status": "finished", **s, **time_columns(s)})
    path = tmp_path / "summary.csv"
    path.write_text(to_csv([{k: v for k, v in r.items() if not isinstance(v, dict)} for r in rows]))
    back = read_summary_csv(path)
    assert back[0]["tta_0.5_s"] == 1800.0 and back[3]["tta_0.5_s"] is None
    text = make_table(back, [factor], [0, 1])
    lines = {
        ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")]
        for ln in text.splitlines()
        if re.match(r"\| (none|60) ", ln)
    }
    # the second table's rows (the ablation's own rows come first and have other columns)
    none = [v for k, v in lines.items() if k == "none"][-1]
    sixty = [v for k, v in lines.items() if k == "60"][-1]
    assert "h to 50%" in text and "slow share" in text
    assert none[2] == "2.50 ± 0.71"  # (2 h, 3 h): mean 2.5, sample std 0.7071
    assert none[3] == "0.75 ± 0.35 (2/2)"  # (0.5 h, 1 h)
    assert sixty[2] == "1.00 ± 0.00" and sixty[3] == "0.25 (1/2)"
    assert sixty[4] == "0.0500 ± 0.0707"


def test_the_run_reports_time_section():
    lines = time_lines({**SUMMARY, "participation": {"replies": {"ok": 9, "late": 1}, "slow_quartile_share": 0.1}})
    assert "| simulated time (s) | 7200.0 |" in lines
    assert "| test accuracy 0.5 first reached | round 3, 1800.0 s |" in lines
    assert "| test accuracy 0.9: never reached | – |" in lines and "| replies late | 1 |" in lines
    assert time_lines({"test_accuracy": 0.5}) == []


@pytest.mark.slow
def test_a_sweep_over_deadlines_reports_time_to_accuracy(tmp_path, tiny):
    import fedsim
    from fedsim.report import report

    base = tiny(system={"source": "synthetic"}, eval={"train_sample": 0, "target_accuracy": 0.3})
    spec = {"name": "clock", "base": base, "grid": {"system.round_deadline": [None, 7.5]}, "seeds": [0, 1]}
    result = fedsim.sweep(spec, out=tmp_path / "sweep")
    rows = read_summary_csv(result.sweep_dir / "summary.csv")
    assert all(r["sim_time_s"] > 0 for r in rows)
    assert "h to 30%" in result.table_markdown
    text = report(result.sweep_dir).read_text()
    assert "(figures/accuracy_vs_time.png)" in text and "h to 30%" in text
    assert (result.sweep_dir / "figures" / "accuracy_vs_time.png").stat().st_size > 1000
    run_dir = result.sweep_dir / "round_deadline=7.5__seed=0"
    text = report(run_dir).read_text()
    assert "## Simulated time" in text and "(plots/accuracy_vs_time.png)" in text


def test_the_slow_quarters_accuracy_by_hand(tmp_path):
    """8 parties, ms per sample 1..8 (party p: p + 1): quarters of 2 fastest first, (0, 1),
    (2, 3), (4, 5), (6, 7); their last-round local accuracies 0.9/0.7, 0.8/0.6, 0.5/0.5,
    0.2/0.4 give means 0.8, 0.7, 0.5, 0.3; an earlier round and the personal mode do not count.
    The time table shows the slowest quarter's accuracy when the runs measured it."""
    profiles = make_profiles(8, [float(p + 1) for p in range(8)], [1e3] * 8, [1e3] * 8, "t")
    accs = [0.9, 0.7, 0.8, 0.6, 0.5, 0.5, 0.2, 0.4]
    rows = [{"round": 2, "party": p, "mode": "local", "accuracy": a} for p, a in enumerate(accs)]
    rows += [{"round": 1, "party": p, "mode": "local", "accuracy": 0.0} for p in range(8)]
    rows += [{"round": 2, "party": p, "mode": "personal", "accuracy": 1.0} for p in range(8)]
    got = quartile_accuracy(rows, profiles)
    assert got["speed_quartile_accuracy"] == pytest.approx([0.8, 0.7, 0.5, 0.3])
    assert got["slow_quartile_accuracy"] == pytest.approx(0.3)
    s = {**SUMMARY, "participation": {"slow_quartile_share": 0.1, "slow_quartile_accuracy": 0.3}}
    assert time_columns(s)["slow_quartile_accuracy"] == 0.3
    factor = Factor("system.round_deadline", "deadline", (Setting("none", {"system.round_deadline": None}),))
    row = {"system.round_deadline": "none", "seed": 0, "status": "finished", **s, **time_columns(s)}
    text = make_table([{k: v for k, v in row.items() if not isinstance(v, dict)}], [factor], [0])
    assert "slow quarter's acc (%)" in text and "| 30.00 |" in text
