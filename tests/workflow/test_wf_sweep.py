"""Sweeps end to end: run directories, summary.csv, table.md, resume, failures, workers."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fedsim.errors import ConfigError, RunDirError
from fedsim.rundir.store import read_jsonl
from fedsim.sweeps import parse_sweep, plan_sweep, read_summary_csv, safe_name, sweep

PARTITIONS = [{"label": "iid", "scheme": "iid"}, {"label": "Dir(0.5)", "scheme": "dirichlet", "beta": 0.5}]


def grid_spec(tiny, **extra) -> dict:
    """The 2 strategies x 2 partitions x 2 seeds sweep of the tiny run, with ``extra`` keys."""
    spec = {
        "name": "tiny",
        "base": tiny(),
        "grid": {"strategy.name": ["fedavg", "fedprox"], "partition": PARTITIONS},
        "seeds": [0, 1],
    }
    spec.update(extra)
    return spec


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory, tiny):
    """The 2 strategies x 2 partitions x 2 seeds sweep, run once for the module."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test one-thread fixture
    try:
        out = tmp_path_factory.mktemp("grid") / "sweep"
        result = sweep(grid_spec(tiny), out=out)
    finally:
        torch.set_num_threads(old)
    return result


def _parse_cell(cell: str) -> tuple[str, str | None, bool]:
    bold = cell.startswith("**")
    m = re.fullmatch(r"\**([0-9.]+)(?: ± ([0-9.]+))?\**", cell.strip())
    assert m, cell
    return m.group(1), m.group(2), bold


def _table_cells(markdown: str) -> dict[str, dict[str, str]]:
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    out = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        out[cells[0]] = dict(zip(head[1:], cells[1:]))
    return out


def test_grid_sweep_writes_one_run_dir_per_run(grid_sweep):
    d = grid_sweep.sweep_dir
    assert grid_sweep.n_finished == 8 and grid_sweep.n_failed == 0
    runs = sorted(p.name for p in d.iterdir() if p.is_dir())
    assert len(runs) == 8
    assert "strategy=fedprox__partition=Dir(0.5)__seed=1" in runs
    for name in runs:
        summary = json.loads((d / name / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["rounds"] == 2
        cfg = yaml.safe_load((d / name / "config.yaml").read_text())
        assert f"strategy={cfg['strategy']['name']}" in name and f"seed={cfg['seed']}" in name
        assert ("partition=iid" in name) == (cfg["partition"]["scheme"] == "iid")
    rows = read_summary_csv(d / "summary.csv")
    assert len(rows) == 8
    assert {r["status"] for r in rows} == {"finished"}
    assert {(r["strategy.name"], r["partition"], r["seed"]) for r in rows} == {
        (s, p, seed) for s in ("fedavg", "fedprox") for p in ("iid", "Dir(0.5)") for seed in (0, 1)
    }
    for r in rows:
        summary = json.loads((d / r["run"] / "summary.json").read_text())
        assert r["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-12)
        assert r["tv_mean"] == pytest.approx(summary["heterogeneity"]["tv_mean"], abs=1e-12)
    index = json.loads((d / "sweep.json").read_text())
    assert len(index["hashes"]) == 8 and sorted(index["hashes"].values()) == runs


def test_table_numbers_equal_those_computed_from_the_csv(grid_sweep):
    d = grid_sweep.sweep_dir
    rows = read_summary_csv(d / "summary.csv")
    table_md = (d / "table.md").read_text()
    assert grid_sweep.table_markdown in table_md
    assert "sample std (ddof=1)" in table_md
    cells = _table_cells(table_md)
    assert set(cells) == {"iid", "Dir(0.5)"}
    for part, by_strategy in cells.items():
        means = {}
        for strat, cell in by_strategy.items():
            accs = [r["test_accuracy"] for r in rows if r["partition"] == part and r["strategy.name"] == strat]
            assert len(accs) == 2
            mean, std, _ = _parse_cell(cell)
            assert mean == f"{100 * statistics.fmean(accs):.2f}"
            assert std == f"{100 * statistics.stdev(accs):.2f}"
            means[strat] = statistics.fmean(accs)
        best = max(means.values())
        for strat, cell in by_strategy.items():
            assert _parse_cell(cell)[2] == (round(100 * means[strat], 2) == round(100 * best, 2))


def test_resume_reruns_nothing_finished_and_finishes_interrupted_runs(grid_sweep, tiny, tmp_path):
    d = tmp_path / "sweep"
    shutil.copytree(grid_sweep.sweep_dir, d)
    before = {p.parent.name: json.loads(p.read_text()) for p in d.glob("*/summary.json")}
    # run A stopped after round 1: no summary, no model, no checkpoint and no records of round 2
    a = d / "strategy=fedavg__partition=Dir(0.5)__seed=1"
    (a / "summary.json").unlink()
    (a / "model.pt").unlink()
    shutil.rmtree(a / "checkpoints" / "round_000002")
    rows = [r for r in read_jsonl(a / "metrics.jsonl") if r["round"] == 1]
    (a / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # run B crashed right after writing its config (after its marker: fedsim writes that first)
    b = d / "strategy=fedprox__partition=iid__seed=0"
    for child in b.iterdir():
        if child.name not in ("config.yaml", ".fedsim", ".fedsim.lock"):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    untouched = {p.parent.name: p.stat().st_mtime_ns for p in d.glob("*/summary.json")}
    assert len(untouched) == 6

    result = sweep(grid_spec(tiny), out=d, resume=True)

    assert result.n_finished == 8 and result.n_failed == 0
    for name, mtime in untouched.items():
        assert (d / name / "summary.json").stat().st_mtime_ns == mtime, f"{name} was rerun"
    for run in (a, b):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["rounds"] == 2
        # deterministic: the resumed and the restarted run end where the original did
        assert summary["test_accuracy"] == pytest.approx(before[run.name]["test_accuracy"], abs=1e-9)
    assert [r["round"] for r in read_jsonl(a / "metrics.jsonl")] == [1, 2]
    assert len(read_summary_csv(d / "summary.csv")) == 8


def test_non_empty_sweep_dir_is_refused_without_resume(grid_sweep, tiny):
    with pytest.raises(RunDirError, match="--resume"):
        sweep(grid_spec(tiny), out=grid_sweep.sweep_dir)


def test_failing_run_is_recorded_and_the_others_go_on(tiny, tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny()))
    sweep_file = tmp_path / "fail.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "base": "base.yaml",  # relative to the sweep file
                "grid": {
                    "data": [
                        {"label": "synthetic", "dataset": "synthetic-images"},
                        {"label": "mnist", "dataset": "mnist", "root": str(empty)},
                    ]
                },
                "seeds": [0],
            }
        )
    )
    from fedsim.cli import main

    code = main(["sweep", str(sweep_file), "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 1  # a failed run makes the command fail, after the others ran
    rows = {r["data"]: r for r in read_summary_csv(tmp_path / "out" / "summary.csv")}
    assert rows["synthetic"]["status"] == "finished" and rows["synthetic"]["test_accuracy"] > 0.3
    assert rows["mnist"]["status"] == "failed"
    assert rows["mnist"]["error"].startswith("DataError") and "\n" not in rows["mnist"]["error"]
    index = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [r["status"] for r in index["runs"]] == ["finished", "failed"]


@pytest.mark.slow  # engine workers: test_eng_engines.py; sweep workers run in test_rel_nothing_lost.py
def test_workers_2_gives_the_same_numbers_as_workers_1(tiny, tmp_path):
    spec = {"base": tiny(engine={"threads": 1}), "grid": {"strategy.name": ["fedavg", "scaffold"]}, "seeds": [0]}
    one = sweep(spec, out=tmp_path / "w1", workers=1)
    two = sweep(spec, out=tmp_path / "w2", workers=2)
    assert one.n_finished == two.n_finished == 2
    for r1, r2 in zip(one.rows, two.rows):
        assert r1["run"] == r2["run"]
        for key in ("test_accuracy", "test_loss", "train_accuracy", "best_test_accuracy", "test_f1_macro"):
            assert r1[key] == pytest.approx(r2[key], abs=1e-6), key
    assert one.table_markdown == two.table_markdown


@pytest.mark.parametrize(
    "change, message",
    [
        ({"grdi": {}}, "unknown sweep key 'grdi'"),
        ({"grid": {"strategy.nam": ["fedavg"]}}, "did you mean 'strategy.name'"),
        ({"grid": {"strategy.name": ["fedavg", "fedfoo"]}}, "strategy.name"),
        ({"grid": {"strategy.name": []}}, "non-empty list"),
        ({"grid": {"partition": ["iid"]}}, "is a section"),
        ({"grid": {"partition": [{"scheme": "iid", "bta": 0.5}]}}, "partition.bta"),
        ({"grid": {"train.lr": [0.1, -1.0]}}, "train.lr"),
        ({"grid": {"train.lr": [{"a": 1}]}}, "scalars"),
        ({"base": None}, "'base' is missing"),
        ({"base": "no/such/config.yaml"}, "does not exist"),
        ({"seeds": [0, "one"]}, "seeds"),
        ({"tune": ["train.lr"]}, "not a grid factor"),
        ({"overrides": ["federation.rounds"]}, "key=value"),
    ],
)
def test_bad_sweeps_fail_before_anything_runs(tmp_path, tiny, change, message):
    spec = grid_spec(tiny, **change)
    if change.get("base", "") is None:
        del spec["base"]
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        sweep(spec, out=out)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_plan_names_labels_and_precedence(tiny):
    spec = {
        "base": tiny(),
        "overrides": ["federation.rounds=3", "train.lr=0.5"],
        "grid": {
            "train.lr": [1e-06, 0.1],
            "partition": [
                {"scheme": "dirichlet", "beta": 0.5},
                {"label": "#C=1", "scheme": "label-quantity", "classes_per_party": 1},
            ],
        },
        "seeds": [3],
    }
    parsed = parse_sweep(spec)
    assert parsed.factors[1].labels == ["dirichlet-beta0.5", "#C=1"]
    _, runs = plan_sweep(spec)
    assert [r.name for r in runs] == [
        "lr=1e-06__partition=dirichlet-beta0.5__seed=3",
        "lr=1e-06__partition=nC=1__seed=3",
        "lr=0.1__partition=dirichlet-beta0.5__seed=3",
        "lr=0.1__partition=nC=1__seed=3",
    ]
    # base < overrides < grid < seeds
    assert [r.config["train"]["lr"] for r in runs] == [1e-06, 1e-06, 0.1, 0.1]
    assert {r.config["federation"]["rounds"] for r in runs} == {3}
    assert {r.config["seed"] for r in runs} == {3}
    assert runs[1].config["partition"]["classes_per_party"] == 1
    assert len({r.hash for r in runs}) == 4
    assert safe_name("a/b c#?") == "a_b_cn_"


def test_fedsim_sweep_is_the_function_next_to_the_package(tiny, tmp_path):
    import fedsim
    import fedsim.sweeps.tables  # noqa: F401  (binds the attribute fedsim.sweeps to the package)

    assert fedsim.sweeps is sys.modules["fedsim.sweeps"] and fedsim.sweep is sweep
    result = fedsim.sweep({"base": tiny(federation={"rounds": 1})}, out=tmp_path / "one")
    assert result.n_finished == 1 and len(result.rows) == 1
    assert result.rows[0]["run"] == "seed=0"


def test_report_on_the_sweep_and_one_of_its_runs(grid_sweep):
    from fedsim.report import report

    path = report(grid_sweep.sweep_dir)
    text = path.read_text()
    for fig in (
        "accuracy_curves",
        "loss_curves",
        "accuracy_vs_tv_mean",
        "accuracy_drop",
        "model_heterogeneity",
        "label_iid",
        "label_Dir_0.5_",
    ):
        png = grid_sweep.sweep_dir / "figures" / f"{fig}.png"
        assert png.exists() and png.stat().st_size > 1000, fig
        assert f"(figures/{fig}.png)" in text
    assert grid_sweep.table_markdown.strip() in text
    run_dir = grid_sweep.sweep_dir / "strategy=fedavg__partition=iid__seed=0"
    run_report = report(run_dir)
    assert run_report == run_dir / "report.md"
    text = run_report.read_text()
    for name in ("accuracy", "loss", "heterogeneity", "label_distribution"):
        png = run_dir / "plots" / f"{name}.png"
        assert png.exists() and png.stat().st_size > 1000
        assert f"(plots/{name}.png)" in text
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"| test_accuracy | {summary['test_accuracy']:.4f} |" in text


@pytest.mark.parametrize(
    "name, n_runs",
    [
        ("quick", 18),
        pytest.param("niid-bench-cifar10", 60, marks=pytest.mark.slow),
        ("moon-cifar10", 9),
        ("mnist-async", 18),
    ],
)
def test_shipped_sweep_files_plan_and_validate(name, n_runs):
    root = Path(__file__).resolve().parents[2]
    spec, runs = plan_sweep(root / "configs" / "sweeps" / f"{name}.yaml")
    assert len(runs) == n_runs and len({r.name for r in runs}) == n_runs
    if name == "mnist-async":  # each setting's own steps: synchronous rounds or server steps
        steps = {r.factors["asynchronous"]: r.config["federation"]["rounds"] for r in runs}
        assert steps["FedAvg sync"] == 30 and steps["FedBuff"] == 120 and steps["FedAsync"] == 1200
    if name == "moon-cifar10":
        assert all(r.config["model"]["projection_head"] for r in runs)
        # the base (MOON, mu 5) is MOON's: FedAvg has no mu, FedProx its own
        assert {r.factors["strategy"]: r.config["strategy"].get("mu") for r in runs} == {
            "fedavg": None,
            "fedprox": 0.01,
            "moon": 5.0,
        }


def test_a_diverged_run_keeps_its_status_in_summary_csv_the_tables_the_report_and_the_figures(tiny, tmp_path, capsys):
    """lr 3 makes the tiny run's loss explode in round 2 (ended as diverged); lr 0.05 trains."""
    from fedsim.cli import main
    from fedsim.report import load_sweep
    from fedsim.report.curves import curves_figure
    from fedsim.report.load import layout_of

    sweep_file = tmp_path / "div.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "name": "div",
                "base": tiny(train={"momentum": 0.9}, federation={"rounds": 3, "max_failure_fraction": 1.0}),
                "grid": {"train.lr": [0.05, 3.0]},  # an ablation: one panel, a line per lr
                "seeds": [0],
            }
        )
    )
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--quiet"]) == 0  # a diverged run is a result
    rows = {r["train.lr"]: r for r in read_summary_csv(out / "summary.csv")}
    bad = rows["3.0"]
    summary = json.loads((out / bad["run"] / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_round"] == 2
    # summary.csv and sweep.json say what summary.json says
    assert (bad["status"], bad["diverged_round"], bad["divergence_reason"]) == (
        "diverged",
        2,
        summary["divergence_reason"],
    )
    assert rows["0.05"]["status"] == "finished" and rows["0.05"]["diverged_round"] is None
    index = json.loads((out / "sweep.json").read_text())
    assert sorted(r["status"] for r in index["runs"]) == ["diverged", "finished"]
    # the command's last lines count it apart and name it
    printed = capsys.readouterr().out
    assert "1 finished, 1 diverged, 0 failed in" in printed
    assert f"  diverged: {bad['run']}: round 2: {summary['divergence_reason']}" in printed
    acc = 100 * summary["test_accuracy"]
    cell = f"| 3.0 | {acc:.2f} † | {100 * summary['best_test_accuracy']:.2f} † |"
    assert cell in (out / "table.md").read_text() and "| 1 (1 diverged) |" in (out / "table.md").read_text()
    # report.md: the counts, the marked cell, the run named
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "2 runs: 1 finished, 1 diverged, 0 not finished; seeds [0]." in text
    assert cell in text
    assert f"| {bad['run']} | 2 | {summary['divergence_reason']} | {acc:.2f} |" in text
    # the loss figure: the diverged run drawn apart, its X at round 2, the axis on the other run
    view = load_sweep(out)
    fig = curves_figure(view, layout_of(view), [("test_loss", "-", "")], "loss", yscale="log")
    (ax,) = fig.axes
    ok = [row["test_loss"] for row in read_jsonl(out / rows["0.05"]["run"] / "metrics.jsonl")]
    low, high = ax.get_ylim()
    assert low <= min(ok) and max(ok) <= high < 10 * max(ok)
    assert [(ln.get_xdata()[0], ln.get_marker()) for ln in ax.get_lines() if ln.get_marker() == "X"] == [(2, "X")]
