"""Communication in the sweep tables and reports: upload MB, download MB, accuracy per MB,
and the figure of accuracy against cumulative MB, on hand-made runs (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fedsim.report import load_sweep, report
from fedsim.report.comm import accuracy_by_mb, comm_lines
from fedsim.report.load import RunInfo
from fedsim.sweeps import Factor, Setting, comm_table, per_mb, plan_sweep, read_summary_csv, sweep

#: (compressor, seed) -> (final accuracy, bytes up a round, bytes down a round)
RUNS = {
    ("none", 0): (0.90, 4_000_000, 4_000_000),
    ("none", 1): (0.92, 4_000_000, 4_000_000),
    ("topk", 0): (0.88, 100_000, 4_000_000),
    ("topk", 1): (0.90, 100_000, 4_000_000),
}


def _run(d: Path, codec: str, seed: int, acc: float, up: int, down: int, rounds: int = 2) -> None:
    d.mkdir(parents=True)
    cfg = {"seed": seed, "strategy": {"name": "fedavg"}, "comm": {"compressor": codec}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [
        {"round": r, "test_accuracy": acc * r / rounds, "bytes_up": up, "bytes_down": down}
        for r in range(1, rounds + 1)
    ]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {
        "status": "finished",
        "rounds": rounds,
        "test_accuracy": acc,
        "strategy": "fedavg",
        "seed": seed,
        "bytes_up_total": up * rounds,
        "bytes_down_total": down * rounds,
    }
    (d / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def comm_sweep(tmp_path) -> Path:
    root = tmp_path / "comm-sweep"
    for (codec, seed), (acc, up, down) in RUNS.items():
        _run(root / f"{codec}-s{seed}", codec, seed, acc, up, down)
    return root


def test_the_table_has_upload_and_download_mb_and_accuracy_per_mb():
    settings = (Setting("none", {"comm.compressor": "none"}), Setting("topk", {"comm.compressor": "topk"}))
    factor = Factor("comm.compressor", "compressor", settings)
    rows = [
        {
            "comm.compressor": c,
            "status": "finished",
            "test_accuracy": a,
            "bytes_up_total": 2 * up,
            "bytes_down_total": 2 * down,
        }
        for (c, _), (a, up, down) in RUNS.items()
    ]
    assert per_mb(rows[0]) == pytest.approx(90 / 16)  # 90% over 8 MB up + 8 MB down
    text = comm_table(rows, [factor], [0, 1])
    assert "| compressor | test acc (%) | upload MB | download MB | acc (%) / MB | n |" in text
    assert "| none | 91.00 ± 1.41 | 8.000 ± 0.000 | 8.000 ± 0.000 | 5.688 ± 0.088 | 2 |" in text
    assert "| topk | 89.00 ± 1.41 | 0.200 ± 0.000 | 8.000 ± 0.000 | 10.854 ± 0.172 | 2 |" in text


def test_the_report_shows_the_table_and_accuracy_against_cumulative_mb(comm_sweep):
    view = load_sweep(comm_sweep)
    lines = comm_lines(view)
    label = next(k for k in lines if "topk" in k)
    assert lines[label] == [(pytest.approx(4.1), pytest.approx(44.5)), (pytest.approx(8.2), pytest.approx(89.0))]
    text = report(comm_sweep).read_text()
    assert "## Communication" in text and "upload MB" in text and "(figures/accuracy_vs_mb.png)" in text
    png = comm_sweep / "figures" / "accuracy_vs_mb.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = report(comm_sweep / "topk-s0").read_text()
    assert "| upload MB | 0.200 |" in run and "| download MB | 8.000 |" in run
    assert "| test accuracy (%) per MB | 10.732 |" in run


def test_accuracy_against_mb_reads_the_rows_cumulative_bytes_when_they_hold_them():
    old = [{"round": r, "bytes_up": 1_000_000, "bytes_down": 3_000_000, "test_accuracy": 0.5} for r in (1, 2)]
    run = RunInfo("old", Path("old"), {}, 0, "finished", _history=old)
    assert accuracy_by_mb(run) == {1: (4.0, 50.0), 2: (8.0, 50.0)}  # rows before the totals: their running sum
    # a row's own totals win (here, by hand, what the rounds before it sent is not in the history)
    new = [{**old[1], "bytes_up_total": 5_000_000, "bytes_down_total": 7_000_000}]
    run = RunInfo("new", Path("new"), {}, 0, "finished", _history=new)
    assert accuracy_by_mb(run) == {2: (12.0, 50.0)}


@pytest.mark.slow
def test_a_sweep_over_compressors_tables_their_bytes(tmp_path, tiny):
    spec = {"name": "codecs", "base": tiny(), "grid": {"comm.compressor": ["none", "sign"]}, "seeds": [0]}
    result = sweep(spec, out=tmp_path / "sw")
    table = (result.sweep_dir / "table.md").read_text()
    assert "## Communication" in table
    rows = {r["comm.compressor"]: r for r in read_summary_csv(result.sweep_dir / "summary.csv")}
    assert (
        rows["sign"]["bytes_up_total"] < rows["none"]["bytes_up_total"] / 20
    )  # 1 bit a coordinate against 32, headers
    assert rows["sign"]["bytes_down_total"] == rows["none"]["bytes_down_total"]
    up = rows["sign"]["bytes_up_total"] / 1e6
    assert f"| sign | {100 * rows['sign']['test_accuracy']:.2f} | {up:.3f} |" in table


def test_a_sweep_grid_may_set_compound_comm_settings(tiny):
    grid = {
        "comm": [{"label": "none", "compressor": "none"}, {"label": "topk 5%", "compressor": "topk", "density": 0.05}]
    }
    spec, runs = plan_sweep({"name": "c", "base": tiny(), "grid": grid, "seeds": [0]})
    assert [f.key for f in spec.factors] == ["comm"]
    assert sorted((r.config["comm"]["compressor"], r.config["comm"].get("density")) for r in runs) == [
        ("none", None),
        ("topk", 0.05),
    ]
