"""The attacks x defences table of a sweep and its report."""

from __future__ import annotations

import fedsim
from fedsim.report import report
from fedsim.sweeps import Factor, Setting, attack_table, read_summary_csv


def _factor(key, short, labels):
    return Factor(key, short, tuple(Setting(lab, {key: lab}) for lab in labels))


def test_the_table_is_mean_and_sample_std_of_accuracy_and_success_per_partition():
    factors = [
        _factor("partition", "partition", ["iid", "Dir(0.5)"]),
        _factor("attack", "attack", ["none", "backdoor"]),
        _factor("defence", "defence", ["fedavg", "krum"]),
    ]
    rows = []
    for part in ("iid", "Dir(0.5)"):
        for atk in ("none", "backdoor"):
            for dfn in ("fedavg", "krum"):
                for seed, (acc, asr) in enumerate([(0.90, 0.40), (0.94, 0.60)]):
                    rows.append(
                        {
                            "partition": part,
                            "attack": atk,
                            "defence": dfn,
                            "seed": seed,
                            "status": "finished",
                            "test_accuracy": acc if part == "iid" else acc - 0.1,
                            "attack_success_rate": asr if atk == "backdoor" else None,
                        }
                    )
    md = attack_table(rows, factors, [0, 1])
    # mean 92.00, sample std sqrt(((0.9-0.92)^2 + (0.94-0.92)^2) / 1) = 2.83 %; success 50.00 ± 14.14
    assert "| backdoor | 92.00 ± 2.83 / 50.00 ± 14.14 | 92.00 ± 2.83 / 50.00 ± 14.14 |" in md
    assert "| none | 92.00 ± 2.83 / – | 92.00 ± 2.83 / – |" in md
    assert "| backdoor | 82.00 ± 2.83 / 50.00 ± 14.14 |" in md
    assert md.index("**partition iid**") < md.index("**partition Dir(0.5)**")
    assert "| attack | fedavg | krum |" in md
    assert attack_table(rows, [factors[0], factors[2]], [0, 1]) is None  # no attack factor


def test_a_sweep_of_attacks_and_defences_writes_the_table_and_the_report(tmp_path, tiny):
    res = fedsim.sweep(
        {
            "base": tiny(federation={"rounds": 1}, train={"epochs": 1}),
            "grid": {
                "attack": [
                    {"label": "none", "name": "none"},
                    {"label": "backdoor", "name": "backdoor", "target_class": 1, "fraction": 0.25},
                ],
                "defence": [
                    {"label": "fedavg", "strategy.name": "fedavg"},
                    {"label": "median", "strategy.name": "fedmedian"},
                    {"label": "norm-bound", "strategy.name": "fedavg", "defence.name": "norm-bound"},
                ],
            },
            "seeds": [0],
        },
        out=tmp_path / "sw",
    )
    assert res.n_finished == 6 and res.n_failed == 0
    table = (tmp_path / "sw" / "table.md").read_text()
    assert "| attack | fedavg | median | norm-bound |" in table
    rows = read_summary_csv(tmp_path / "sw" / "summary.csv")
    bd = [r for r in rows if r["attack"] == "backdoor"]
    assert len(bd) == 3 and all(0.0 <= r["attack_success_rate"] <= 1.0 for r in bd)
    assert all(r["attack_success_rate"] is None for r in rows if r["attack"] == "none")
    cell = next(r for r in bd if r["defence"] == "median")
    assert f"{cell['test_accuracy'] * 100:.2f} / {cell['attack_success_rate'] * 100:.2f}" in table
    md = report(tmp_path / "sw").read_text()
    assert "## Attacks and defences" in md and "| attack | fedavg | median | norm-bound |" in md
