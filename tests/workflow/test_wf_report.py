"""Reports on hand-made run and sweep directories (fabricated files: no training)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml
from matplotlib.container import BarContainer

from fedsim.errors import RunDirError
from fedsim.report import accuracy_drops, load_sweep, report
from fedsim.report.curves import curves_figure, model_heterogeneity_figure
from fedsim.report.figures import accuracy_vs_heterogeneity_figure, drops_figure, party_distribution_figure
from fedsim.report.load import layout_of
from fedsim.rundir.plots import run_figures, run_title
from fedsim.rundir.store import read_jsonl

PARTS = {
    "iid": {"scheme": "iid", "n_parties": 4},
    "Dir(0.5)": {"scheme": "dirichlet", "n_parties": 4, "beta": 0.5},
    "#C=1": {"scheme": "label-quantity", "n_parties": 4, "classes_per_party": 1},
}
TV = {"iid": 0.05, "Dir(0.5)": 0.4, "#C=1": 0.75}
ACC = {
    ("fedavg", "iid"): [0.90, 0.92],
    ("fedavg", "Dir(0.5)"): [0.80, 0.84],
    ("fedavg", "#C=1"): [0.40, 0.50],
    ("scaffold", "iid"): [0.91, 0.91],
    ("scaffold", "Dir(0.5)"): [0.85, 0.87],
    ("scaffold", "#C=1"): [0.30, 0.36],
}


def fabricate_run(run_dir: Path, strategy: str, part: str, seed: int, acc: float, rounds: int = 3) -> None:
    run_dir.mkdir(parents=True)
    p = PARTS[part]
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "strategy": {"name": strategy}, "partition": p}))
    rows = []
    for r in range(1, rounds + 1):
        frac = r / rounds
        rows.append(
            {
                "round": r,
                "test_accuracy": acc * frac,
                "test_loss": 2.0 - frac,
                "train_loss": 1.5 - frac / 2,
                "client_drift_mean": 0.1 * TV[part] + 0.01 * r,
                "update_cosine_mean": 1 - TV[part],
                "gradient_diversity": 0.3 + TV[part],
            }
        )
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = (
        [[25, 25, 25, 25]] * 4 if part == "iid" else [[100, 0, 0, 0], [0, 100, 0, 0], [0, 0, 100, 0], [0, 0, 0, 100]]
    )
    (run_dir / "partition.json").write_text(json.dumps({"class_counts": counts, "tv_mean": TV[part]}))
    summary = {
        "status": "finished",
        "rounds": rounds,
        "test_accuracy": acc,
        "best_test_accuracy": acc,
        "test_f1_macro": acc - 0.01,
        "test_loss": 1.0,
        "strategy": strategy,
        "partition": p,
        "seed": seed,
        "heterogeneity": {"tv_mean": TV[part]},
        "wall_time_s": 1.0,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def fake_sweep(tmp_path) -> Path:
    d = tmp_path / "fake-sweep"
    for (strategy, part), accs in ACC.items():
        for seed, acc in enumerate(accs):
            fabricate_run(d / f"{strategy}-{part.replace('#', 'n')}-s{seed}", strategy, part, seed, acc)
    return d


def test_accuracy_drop_against_iid_has_the_right_numbers(fake_sweep):
    view = load_sweep(fake_sweep)
    assert [f.key for f in view.factors] == ["strategy.name", "partition"]
    assert view.factors[1].labels[0] == "iid"
    drops = {(d.series, d.setting[0]): d for d in accuracy_drops(view)}
    expected = {
        ("fedavg", "Dir(0.5)"): 0.09,
        ("fedavg", "#C=1"): 0.46,
        ("scaffold", "Dir(0.5)"): 0.05,
        ("scaffold", "#C=1"): 0.58,
    }
    assert set(drops) == set(expected)
    for key, drop in expected.items():
        assert drops[key].drop == pytest.approx(drop)
        assert drops[key].iid_mean == pytest.approx(0.91)
        assert drops[key].n_pairs == 2 and drops[key].diverged == 0
    # the spread: sample std of the paired drops IID(seed) - setting(seed); fedavg #C=1: 0.50 and 0.42
    assert drops[("fedavg", "#C=1")].std == pytest.approx(statistics.stdev([0.90 - 0.40, 0.92 - 0.50]))
    assert drops[("scaffold", "Dir(0.5)")].std == pytest.approx(statistics.stdev([0.91 - 0.85, 0.91 - 0.87]))

    text = report(fake_sweep).read_text()
    assert "| setting | fedavg | scaffold |" in text
    assert "| IID accuracy (%) | 91.00 | 91.00 |" in text
    assert "| Dir(0.5) | 9.00 ± 1.41 | 5.00 ± 1.41 |" in text
    assert "| #C=1 | 46.00 ± 5.66 | 58.00 ± 4.24 |" in text
    # the results table: mean ± sample std, best per row in bold
    assert "| #C=1 | **45.00 ± 7.07** | 33.00 ± 4.24 |" in text


def test_sweep_report_writes_every_figure(fake_sweep):
    path = report(fake_sweep)
    assert path == fake_sweep / "report.md"
    text = path.read_text()
    figs = [
        "accuracy_curves",
        "loss_curves",
        "accuracy_vs_tv_mean",
        "accuracy_drop",
        "model_heterogeneity",
        "label_iid",
        "label_Dir_0.5_",
        "label_nC_1",
    ]
    for name in figs:
        png = fake_sweep / "figures" / f"{name}.png"
        assert png.exists() and png.stat().st_size > 1000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(figures/{name}.png)" in text
    beta = report(fake_sweep, measure="beta").read_text()
    assert "(figures/accuracy_vs_beta.png)" in beta


def test_run_report_of_a_hand_made_run(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, "fedprox", "Dir(0.5)", 0, 0.77)
    from fedsim.cli import main

    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "| test_accuracy | 0.7700 |" in text and "| tv_mean | 0.4000 |" in text
    for name in ("accuracy", "loss", "heterogeneity", "label_distribution"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 1000
        assert f"(plots/{name}.png)" in text


def test_report_of_an_unfinished_run_and_of_a_stranger(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, "fedavg", "iid", 0, 0.5)
    (run / "summary.json").unlink()
    assert "has not finished" in report(run).read_text()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="is neither a run directory"):
        report(tmp_path / "empty")
    with pytest.raises(RunDirError, match="not a directory"):
        report(tmp_path / "missing")


def test_cli_report_prints_the_path(fake_sweep, capsys):
    from fedsim.cli import main

    assert main(["report", str(fake_sweep)]) == 0
    assert capsys.readouterr().out.strip() == str(fake_sweep / "report.md")


def test_drop_against_iid_in_a_sweep_over_partitions_alone(tmp_path):
    """One strategy, partitions as the only factor: IID is the reference of the others."""
    d = tmp_path / "partitions-only"
    for part in ("iid", "Dir(0.5)", "#C=1"):
        for seed, acc in enumerate(ACC[("fedavg", part)]):
            fabricate_run(d / f"fedavg-{part.replace('#', 'n')}-s{seed}", "fedavg", part, seed, acc)
    drops = {d_.setting[0]: d_ for d_ in accuracy_drops(load_sweep(d))}
    assert set(drops) == {"Dir(0.5)", "#C=1"}
    assert drops["Dir(0.5)"].series == "fedavg"
    assert drops["Dir(0.5)"].drop == pytest.approx(0.09)
    assert drops["#C=1"].drop == pytest.approx(0.46)
    assert "| #C=1 | 46.00 ± 5.66 |" in report(d).read_text()


# ------------------------------------------------------------ what the figures draw


def _lines(ax) -> dict:
    """The labelled lines of an axes (matplotlib names unlabelled artists '_child...')."""
    return {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def test_curve_figures_draw_the_mean_of_each_strategy_in_each_partition_panel(fake_sweep):
    view = load_sweep(fake_sweep)
    layout = layout_of(view)
    fig = curves_figure(view, layout, [("test_accuracy", "-", "")], "test accuracy (%)")
    assert [ax.get_title() for ax in fig.axes] == ["iid", "Dir(0.5)", "#C=1"]
    for ax in fig.axes:
        lines = _lines(ax)
        assert list(lines) == ["fedavg", "scaffold"]
        for strategy, line in lines.items():
            mean = statistics.fmean(ACC[(strategy, ax.get_title())])
            assert list(line.get_xdata()) == [1, 2, 3]
            assert list(line.get_ydata()) == pytest.approx([100 * mean * r / 3 for r in (1, 2, 3)])
        # a marker per strategy: lines that coincide, or a page printed in grey, still tell them apart
        assert (lines["fedavg"].get_marker(), lines["scaffold"].get_marker()) == ("o", "s")
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("round", "test accuracy (%)")
        assert ax.get_yscale() == "linear" and ax.get_legend() is None
    # one legend for the panels, right of them (three copies covered data)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["fedavg", "scaffold"]
    loss = curves_figure(
        view, layout, [("test_loss", "-", " (test)"), ("train_loss", "--", " (train)")], "loss", yscale="log"
    )
    for ax in loss.axes:
        assert ax.get_yscale() == "log"
        lines = _lines(ax)
        assert list(lines) == ["fedavg (test)", "fedavg (train)", "scaffold (test)", "scaffold (train)"]
        assert list(lines["fedavg (test)"].get_ydata()) == pytest.approx([2 - r / 3 for r in (1, 2, 3)])
        assert lines["fedavg (train)"].get_linestyle() == "--"


def _means(ax) -> dict:
    """The setting means of an accuracy-against-measure figure: series -> its error-bar container."""
    from matplotlib.container import ErrorbarContainer

    return {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}


def _dots(ax) -> int:
    """How many runs an axes draws as scatter dots."""
    from matplotlib.collections import PathCollection

    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def test_accuracy_against_tv_draws_each_settings_mean_with_its_spread_unjoined_and_named(fake_sweep):
    view = load_sweep(fake_sweep)
    fig = accuracy_vs_heterogeneity_figure(view, "tv_mean")
    ax = fig.axes[0]
    means = _means(ax)
    assert list(means) == ["fedavg", "scaffold"]
    parts = sorted(TV, key=TV.get)
    for strategy, container in means.items():
        line = container.lines[0]
        # different partitions are not points of one curve: the means are not joined
        assert line.get_linestyle() == "None" and line.get_marker() == "s"
        assert list(line.get_xdata()) == pytest.approx([TV[p] for p in parts])
        assert list(line.get_ydata()) == pytest.approx([100 * statistics.fmean(ACC[(strategy, p)]) for p in parts])
        # the error bars: mean ± sample std over the seeds, e.g. fedavg #C=1: 45 ± 7.07
        (bars,) = container.lines[2]
        spans = [seg[1][1] - seg[0][1] for seg in bars.get_segments()]
        assert spans == pytest.approx([2 * 100 * statistics.stdev(ACC[(strategy, p)]) for p in parts])
    # the settings are named above the axes, at their measure
    top = next(c for c in ax.child_axes)
    assert [t.get_text() for t in top.get_xticklabels()] == parts
    assert list(top.get_xticks()) == pytest.approx([TV[p] for p in parts])
    assert ax.get_xlabel() == "data heterogeneity: tv_mean (higher = more heterogeneous)"
    assert ax.get_ylabel() == "final test accuracy (%)" and not fig.texts  # every run has a tv_mean
    assert _dots(ax) == 12  # every run is a dot


def test_accuracy_against_beta_shows_iid_at_the_right_edge_and_names_what_is_not_on_the_axis(fake_sweep):
    view = load_sweep(fake_sweep)
    fig = accuracy_vs_heterogeneity_figure(view, "beta")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert (
        ax.get_xlabel() == "Dirichlet concentration β (higher = closer to IID)"
        and "heterogeneity" not in ax.get_xlabel()
    )
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "IID"]
    beta_tick, iid_tick = ax.get_xticks()
    means = _means(ax)
    assert list(means) == ["fedavg", "scaffold"]
    for strategy in ("fedavg", "scaffold"):
        line = means[strategy].lines[0]
        assert list(line.get_xdata()) == [0.5, iid_tick] and iid_tick > beta_tick
        assert list(line.get_ydata()) == pytest.approx([100 * statistics.fmean(ACC[(strategy, "Dir(0.5)")]), 91.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "fedavg",
        "scaffold",
        "a run",
        "mean ± sample std over seeds",
    ]
    assert _dots(ax) == 8  # every Dir(0.5) and IID run is a dot
    (note,) = fig.texts
    assert note.get_text() == "not on this axis: #C=1 (label-quantity: no beta)"
    text = report(fake_sweep, measure="beta").read_text()
    assert "## Accuracy against the Dirichlet concentration beta" in text
    assert "Not on this axis: #C=1 (label-quantity: no beta)." in text and "data heterogeneity (beta)" not in text


def test_drop_figure_draws_one_bar_per_strategy_and_setting(fake_sweep):
    view = load_sweep(fake_sweep)
    fig = drops_figure(accuracy_drops(view), view)
    (ax,) = fig.axes
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    heights = {k: [p.get_height() for p in c.patches] for k, c in bars.items()}
    assert heights == {"fedavg": pytest.approx([9.0, 46.0]), "scaffold": pytest.approx([5.0, 58.0])}
    # error bars: ± the sample std of the paired drops (fedavg #C=1: 50 and 42 points -> 5.66)
    (err,) = bars["fedavg"].errorbar.lines[2]
    assert [seg[1][1] - seg[0][1] for seg in err.get_segments()] == pytest.approx(
        [2 * 100 * statistics.stdev([0.10, 0.08]), 2 * 100 * statistics.stdev([0.50, 0.42])]
    )
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Dir(0.5)", "#C=1"]
    assert ax.get_ylabel() == "accuracy drop vs IID (pp)"


def test_drop_figure_legend_covers_no_bar_and_stays_in_the_figure(tmp_path):
    """Bars as tall as the axes in every slot (the legend's usual corners included)."""
    d = tmp_path / "tall"
    for strategy in ("fedavg", "fedprox", "scaffold"):
        for part, acc in (("iid", 0.95), ("Dir(0.5)", 0.10), ("#C=1", 0.12)):
            fabricate_run(d / f"{strategy}-{part.replace('#', 'n')}", strategy, part, 0, acc)
    view = load_sweep(d)
    fig = drops_figure(accuracy_drops(view), view)
    (ax,) = fig.axes
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    bars = [
        patch.get_window_extent(renderer)
        for container in ax.containers
        if isinstance(container, BarContainer)
        for patch in container
    ]
    assert len(bars) == 6
    assert not any(legend.overlaps(bar) for bar in bars)
    assert legend.x0 >= ax.get_window_extent(renderer).x1  # right of the axes
    assert (
        fig.bbox.x0 <= legend.x0 and legend.x1 <= fig.bbox.x1 and fig.bbox.y0 <= legend.y0 and legend.y1 <= fig.bbox.y1
    )
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fedavg", "fedprox", "scaffold"]


def test_model_heterogeneity_figure_has_a_row_per_measure_and_a_column_per_setting(fake_sweep):
    view = load_sweep(fake_sweep)
    fig = model_heterogeneity_figure(view, layout_of(view))
    assert len(fig.axes) == 9
    grid = [fig.axes[i * 3 : (i + 1) * 3] for i in range(3)]
    assert [row[0].get_ylabel() for row in grid] == [
        "client drift (mean)",
        "update cosine (mean)",
        "gradient diversity",
    ]
    assert [ax.get_title() for ax in grid[0]] == ["iid", "Dir(0.5)", "#C=1"]
    cosine = _lines(grid[1][2])["fedavg"]
    assert list(cosine.get_ydata()) == pytest.approx([1 - TV["#C=1"]] * 3)


def test_run_figures_draw_the_runs_curves(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, "fedprox", "Dir(0.5)", 0, 0.77)
    assert run_title(run / "config.yaml") == "fedprox, Dir(0.5)"
    figs = run_figures(read_jsonl(run / "metrics.jsonl"), run_title(run / "config.yaml"))
    assert list(figs) == ["accuracy.png", "loss.png", "heterogeneity.png"]
    assert {ax.get_title() for fig in figs.values() for ax in fig.axes} == {"fedprox, Dir(0.5)"}
    (acc,) = figs["accuracy.png"].axes
    assert list(_lines(acc)) == ["test (global model)"]
    assert list(_lines(acc)["test (global model)"].get_ydata()) == pytest.approx([0.77 * r / 3 for r in (1, 2, 3)])
    (loss,) = figs["loss.png"].axes
    assert list(_lines(loss)) == ["test", "local training"]
    assert (loss.get_xlabel(), loss.get_ylabel()) == ("round", "loss (log scale)")
    assert loss.get_yscale() == "log" and acc.get_yscale() == "linear"


def test_a_diverged_runs_own_plots_mark_the_round_it_diverged(tmp_path):
    run = tmp_path / "run"
    fabricate_run(run, "fedavg", "iid", 0, 0.9)
    diverge(run, at=2)
    figs = run_figures(read_jsonl(run / "metrics.jsonl"), "fedavg, iid")
    for name in ("accuracy.png", "loss.png", "heterogeneity.png"):
        (ax,) = figs[name].axes
        mark = _lines(ax)["diverged (round 2)"]
        assert list(mark.get_xdata()) == [2, 2] and mark.get_linestyle() == ":"
    text = report(run).read_text()
    assert "| status | diverged |" in text and "| diverged_round | 2 |" in text


def test_a_diverged_runs_loss_stays_readable_on_the_log_axis(tmp_path):
    """A run's loss explodes 2 -> 1e3 -> 1e6: on the log axis the middle round sits about
    half way up (on a linear axis it would be 0.1% up: one spike, everything else flat)."""
    d = tmp_path / "diverged"
    fabricate_run(d / "fedavg-iid-s0", "fedavg", "iid", 0, 0.9)
    fabricate_run(d / "scaffold-iid-s0", "scaffold", "iid", 0, 0.9)
    rows = read_jsonl(d / "scaffold-iid-s0" / "metrics.jsonl")
    for row, loss in zip(rows, (2.0, 1e3, 1e6)):
        row["test_loss"] = loss
    (d / "scaffold-iid-s0" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    view = load_sweep(d)
    (ax,) = curves_figure(view, layout_of(view), [("test_loss", "-", "")], "loss (log scale)", yscale="log").axes
    assert ax.get_yscale() == "log"
    height = [ax.transAxes.inverted().transform(ax.transData.transform((2, y)))[1] for y in (2.0, 1e3, 1e6)]
    assert 0.4 < (height[1] - height[0]) / (height[2] - height[0]) < 0.6
    low, high = ax.get_ylim()
    assert low < 1.0 and high >= 1e6  # fedavg's 1.0-1.67 and the spike both on the axis
    assert "on a log axis" in report(d).read_text()


def test_run_title_names_strategy_and_partition(tmp_path):
    for strategy, part, title in (("fedavg", "iid", "fedavg, iid"), ("scaffold", "#C=1", "scaffold, #C=1")):
        fabricate_run(tmp_path / strategy, strategy, part, 0, 0.5)
        assert run_title(tmp_path / strategy / "config.yaml") == title
    assert run_title(tmp_path / "missing.yaml") == ""


def test_curve_panels_name_what_their_lines_share(tmp_path):
    """Strategies on one partition: the single panel names the partition; partitions with
    one strategy: it names the strategy (never a bare 'all')."""
    strategies = tmp_path / "strategies"
    for strategy in ("fedavg", "scaffold"):
        fabricate_run(strategies / strategy, strategy, "Dir(0.5)", 0, 0.8)
    partitions = tmp_path / "partitions"
    for part in ("iid", "Dir(0.5)"):
        fabricate_run(partitions / part.replace("(", "").replace(")", ""), "fedprox", part, 0, 0.8)
    for d, title, lines in (
        (strategies, "Dir(0.5)", ["fedavg", "scaffold"]),
        (partitions, "fedprox", ["iid", "Dir(0.5)"]),
    ):
        view = load_sweep(d)
        (ax,) = curves_figure(view, layout_of(view), [("test_accuracy", "-", "")], "test accuracy (%)").axes
        assert ax.get_title() == title and list(_lines(ax)) == lines


def test_curve_panels_of_a_non_partition_factor_say_which_factor(tmp_path):
    d = tmp_path / "lr-sweep"
    runs = []
    for strategy in ("fedavg", "scaffold"):
        for lr in ("0.01", "0.1"):
            name = f"strategy={strategy}__lr={lr}__seed=0"
            fabricate_run(d / name, strategy, "Dir(0.5)", 0, 0.8)
            runs.append(
                {"name": name, "factors": {"strategy.name": strategy, "train.lr": lr}, "seed": 0, "status": "finished"}
            )
    index = {
        "name": "lr",
        "factors": [
            {"key": "strategy.name", "short": "strategy", "labels": ["fedavg", "scaffold"]},
            {"key": "train.lr", "short": "lr", "labels": ["0.01", "0.1"]},
        ],
        "seeds": [0],
        "tune": [],
        "runs": runs,
    }
    (d / "sweep.json").write_text(json.dumps(index))
    view = load_sweep(d)
    fig = curves_figure(view, layout_of(view), [("test_accuracy", "-", "")], "test accuracy (%)")
    assert [ax.get_title() for ax in fig.axes] == ["lr=0.01, Dir(0.5)", "lr=0.1, Dir(0.5)"]


def _add_parties(run_dir: Path, local: list[float], personal: list[float] | None, finetune: list[float] | None = None):
    """Per-party rows of rounds 2 (ignored: not the last) and 3, and the summary keys."""
    rows = []
    for rnd in (2, 3):
        for mode, accs in (("local", local), ("personal", personal), ("finetune", finetune)):
            for p, a in enumerate(accs or []):
                rows.append(
                    {
                        "round": rnd,
                        "party": p,
                        "mode": mode,
                        "holdout": False,
                        "n_test": 10,
                        "accuracy": a if rnd == 3 else 0.0,
                        "loss": 1.0,
                        "f1_macro": a,
                    }
                )
    rows.append(
        {
            "round": 3,
            "party": 9,
            "mode": "local",
            "holdout": True,
            "n_test": 10,
            "accuracy": 0.01,
            "loss": 1.0,
            "f1_macro": 0.0,
        }
    )
    (run_dir / "parties.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = json.loads((run_dir / "summary.json").read_text())
    s["local_test_accuracy"] = statistics.fmean(local)
    if personal:
        s["personal_test_accuracy"] = statistics.fmean(personal)
    if finetune:
        s["finetune_test_accuracy"] = statistics.fmean(finetune)
    (run_dir / "summary.json").write_text(json.dumps(s))


def test_personal_table_and_per_party_boxes(fake_sweep):
    for run_dir in sorted(fake_sweep.iterdir()):
        seed = int(run_dir.name[-1])
        if run_dir.name.startswith("fedavg"):
            _add_parties(run_dir, [0.5 + 0.1 * seed, 0.7], None, [0.8, 0.9 + 0.02 * seed])
        else:  # "scaffold" plays a personalised algorithm here
            _add_parties(run_dir, [0.4, 0.6], [0.95, 0.97 - 0.02 * seed])
    text = report(fake_sweep).read_text()
    assert "| algorithm | iid: own model | iid: global model |" in text
    # fedavg: global 0.60 and 0.65 over the seeds, no own model; fedavg+FT: 0.85 and 0.86
    assert "| fedavg | – | 62.50 ± 3.54 |" in text
    assert "| fedavg+FT | 85.50 ± 0.71 | 62.50 ± 3.54 |" in text
    assert "| scaffold | 95.50 ± 0.71 | 50.00 ± 0.00 |" in text
    view = load_sweep(fake_sweep)
    fig = party_distribution_figure(view, layout_of(view))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fedavg (global)", "fedavg+FT", "scaffold"]
    # the boxes pool both seeds' parties of the last round, held-out party left out:
    # fedavg (global) 50, 70, 60, 70 -> median 65
    medians = [line.get_ydata()[0] for line in ax.lines if line.get_color() in ("C1", "#ff7f0e")]
    assert medians[0] == pytest.approx(65.0)
    assert (fake_sweep / "figures" / "party_accuracy.png").exists()


# ------------------------------------------------------------ a diverged run, everywhere


def diverge(run_dir: Path, at: int = 3, reason: str = "train loss 1e+27 above 10 x round 1's") -> None:
    """Make a fabricated run one that diverged in round ``at``: its loss and model
    heterogeneity explode (to 1e28 in round 3), its accuracy falls to chance, and its
    summary says so."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    for row, big in zip(rows, (None, 1e6, 1e28)):
        if big is not None:
            row.update(test_loss=big, train_loss=big / 10, client_drift_mean=big, gradient_diversity=big)
        if row["round"] == at:
            row.update(diverged=reason, test_accuracy=0.1)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = json.loads((run_dir / "summary.json").read_text())
    s.update(status="diverged", diverged_round=at, divergence_reason=reason, test_accuracy=0.1)
    (run_dir / "summary.json").write_text(json.dumps(s))


@pytest.fixture
def diverged_sweep(fake_sweep) -> Path:
    """The fake sweep with scaffold's Dir(0.5) seed 1 diverged in round 3 (seed 0 finished)."""
    diverge(fake_sweep / "scaffold-Dir(0.5)-s1")
    return fake_sweep


def test_a_diverged_run_is_marked_in_every_table_of_the_report(diverged_sweep):
    text = report(diverged_sweep).read_text()
    # the counts, the results table, the drop table and the list of diverged runs
    assert "12 runs: 11 finished, 1 diverged, 0 not finished; seeds [0, 1]." in text
    mean, sd = statistics.fmean([0.85, 0.1]), statistics.stdev([0.85, 0.1])
    assert f"| Dir(0.5) | **82.00 ± 2.83** | {100 * mean:.2f} ± {100 * sd:.2f} † (1 diverged) |" in text
    assert "† runs whose training diverged are in the mean" in text
    drop = 100 * (0.91 - mean)
    paired = 100 * statistics.stdev([0.91 - 0.85, 0.91 - 0.1])
    assert f"| Dir(0.5) | 9.00 ± 1.41 | {drop:.2f} ± {paired:.2f} † (1 diverged) |" in text
    assert "| scaffold-Dir(0.5)-s1 | 3 | train loss 1e+27 above 10 x round 1's | 10.00 |" in text
    assert text.index("## Diverged runs") < text.index("## Test accuracy over rounds")
    # the loss figure's caption says which run leaves its axis
    assert "1 diverged run (scaffold-Dir(0.5)-s1) leaves it" in text


def test_a_diverged_run_stays_out_of_the_mean_and_off_the_loss_axis(diverged_sweep):
    view = load_sweep(diverged_sweep)
    layout = layout_of(view)
    cut: list[str] = []
    fig = curves_figure(
        view, layout, [("test_loss", "-", " (test)"), ("train_loss", "--", " (train)")], "loss", yscale="log", cut=cut
    )
    ax = fig.axes[1]
    assert ax.get_title() == "Dir(0.5)\n1 diverged run off the axis (▲ where it leaves)"
    lines = _lines(ax)
    # scaffold's mean is seed 0's curve alone (2 - r/3), to the last round
    assert list(lines["scaffold (test)"].get_xdata()) == [1, 2, 3]
    assert list(lines["scaffold (test)"].get_ydata()) == pytest.approx([2 - r / 3 for r in (1, 2, 3)])
    # the diverged run: its own line, named in the legend, an X at round 3
    own = lines["scaffold (test), Dir(0.5), seed 1: diverged in round 3"]
    assert list(own.get_ydata()) == pytest.approx([2 - 1 / 3, 1e6, 1e28])
    xs = [(ln.get_xdata()[0], ln.get_marker()) for ln in ax.get_lines() if ln.get_gid() == "diverged"]
    assert (3, "X") in xs and (2, "^") in xs  # X at its round (on the edge), ▲ where it leaves the axis
    # the axis stays on the runs that did not diverge: 0.67 to 1.67, not 1e28
    low, high = ax.get_ylim()
    assert 0.5 < low < 1.0 and 1.6 < high < 2.5
    assert cut == ["scaffold-Dir(0.5)-s1"]
    # the other panels are untouched
    assert fig.axes[0].get_title() == "iid" and fig.axes[0].get_ylim()[1] < 2.5
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "the round a run diverged" in legend and "a diverged run leaves the axis" in legend
    # accuracy: bounded, so the diverged run's fall to 10% stays on the axis; the mean goes on
    acc = curves_figure(view, layout, [("test_accuracy", "-", "")], "test accuracy (%)")
    ax = acc.axes[1]
    assert ax.get_title() == "Dir(0.5)"
    assert list(_lines(ax)["scaffold"].get_xdata()) == [1, 2, 3]
    assert list(_lines(ax)["scaffold"].get_ydata()) == pytest.approx([85 * r / 3 for r in (1, 2, 3)])
    assert ax.get_ylim()[0] < 10


def test_a_diverged_run_is_marked_in_the_other_figures(diverged_sweep):
    view = load_sweep(diverged_sweep)
    layout = layout_of(view)
    ax = accuracy_vs_heterogeneity_figure(view, "tv_mean").axes[0]
    top = next(c for c in ax.child_axes)
    assert [t.get_text() for t in top.get_xticklabels()] == ["iid", "Dir(0.5) †", "#C=1"]
    (crosses,) = [c for c in ax.collections if c.get_gid() == "diverged"]  # the diverged run, an x
    assert [list(xy) for xy in crosses.get_offsets()] == [pytest.approx([0.4, 10.0])]
    assert ax.get_legend().get_texts()[-1].get_text() == "a diverged run († its setting's mean includes it)"
    # the drop figure: scaffold's Dir(0.5) bar hatched with a †
    fig = drops_figure(accuracy_drops(view), view)
    bars = {c.get_label(): c for c in fig.axes[0].containers if isinstance(c, BarContainer)}
    assert [p.get_hatch() for p in bars["scaffold"].patches] == ["//", None]
    assert [p.get_hatch() for p in bars["fedavg"].patches] == [None, None]
    assert [t.get_text() for t in fig.axes[0].texts] == ["†"]
    # model heterogeneity: client drift of 1e28 leaves the axis, which stays near 0.05-0.07
    cut: list[str] = []
    fig = model_heterogeneity_figure(view, layout, cut)
    drift = fig.axes[1]
    assert drift.get_ylim()[1] < 0.1 and cut == ["scaffold-Dir(0.5)-s1"]
    # every axis label, title and legend entry lies inside the figure (a label clipped at its edge was reported)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes for t in (ax.yaxis.label, ax.xaxis.label, ax.title) if t.get_text()]
    assert [t.get_text() for t in texts if t is fig.axes[3].yaxis.label] == ["update cosine (mean)"]
    for t in texts + list(fig.legends[0].get_texts()):
        ext = t.get_window_extent(renderer)
        assert fig.bbox.x0 <= ext.x0 and ext.x1 <= fig.bbox.x1 and fig.bbox.y0 <= ext.y0 and ext.y1 <= fig.bbox.y1


def test_a_sweep_without_a_strategy_factor_compares_its_varying_factor_across_partitions(tmp_path):
    """Defences x partitions under one attack (the mnist-signflip-scale layout): the defences
    are the series of the figures that compare partitions, the attack (one value) is said once."""
    d = tmp_path / "defences"
    accs = {("FedAvg", "iid"): 0.9, ("FedAvg", "Dir(0.5)"): 0.6, ("median", "iid"): 0.95, ("median", "Dir(0.5)"): 0.8}
    runs = []
    for (defence, part), acc in accs.items():
        name = f"partition={part}__attack=flip__defence={defence}__seed=0"
        fabricate_run(d / name, {"FedAvg": "fedavg", "median": "fedmedian"}[defence], part, 0, acc)
        runs.append({"name": name, "factors": {"partition": part, "attack": "flip", "defence": defence}, "seed": 0})
    factors = [("partition", ["iid", "Dir(0.5)"]), ("attack", ["flip"]), ("defence", ["FedAvg", "median"])]
    index = {
        "name": "defences",
        "factors": [{"key": k, "short": k, "labels": labels} for k, labels in factors],
        "seeds": [0],
        "tune": [],
        "runs": [{**r, "status": "finished"} for r in runs],
    }
    (d / "sweep.json").write_text(json.dumps(index))
    view = load_sweep(d)
    ax = accuracy_vs_heterogeneity_figure(view, "tv_mean").axes[0]
    means = _means(ax)
    assert list(means) == ["FedAvg", "median"] and ax.get_legend().get_title().get_text() == "defence"
    assert list(means["median"].lines[0].get_xdata()) == pytest.approx([TV["iid"], TV["Dir(0.5)"]])
    assert [t.get_text() for t in next(iter(ax.child_axes)).get_xticklabels()] == ["iid", "Dir(0.5)"]
    drops = {(x.series, x.setting): x.drop for x in accuracy_drops(view)}
    assert drops == {("FedAvg", ("Dir(0.5)",)): pytest.approx(0.3), ("median", ("Dir(0.5)",)): pytest.approx(0.15)}
    assert "| setting | FedAvg | median |" in report(d).read_text()
    fig = curves_figure(view, layout_of(view), [("test_accuracy", "-", "")], "test accuracy (%)")
    # the attack, one value, above the panels; each panel's title only what tells it apart
    assert fig.get_suptitle() == "attack=flip"
    assert [ax.get_title() for ax in fig.axes] == ["fedavg, defence=FedAvg", "fedmedian, defence=median"]


def test_per_party_boxes_of_many_algorithms_stack_their_panels_in_a_printable_shape(tmp_path):
    """Ten algorithms x two settings: one panel a row (side by side they made a strip
    22 in wide and 3.8 high, its labels unreadable at a column's width)."""
    d = tmp_path / "personal"
    algorithms = ["fedavg", "fedprox", "scaffold", "fednova", "moon", "fedbn"]
    for strategy in algorithms:
        for part in ("iid", "Dir(0.5)"):
            run = d / f"{strategy}-{part}"
            fabricate_run(run, strategy, part, 0, 0.8)
            _add_parties(run, [0.5, 0.6], [0.9, 0.95])
    view = load_sweep(d)
    fig = party_distribution_figure(view, layout_of(view))
    width, height = fig.get_size_inches()
    assert width / height <= 1.5 and width <= 10
    top, bottom = fig.axes
    assert top.get_position().y0 > bottom.get_position().y1  # stacked, not side by side
    assert sorted(t.get_text() for t in top.get_xticklabels()) == sorted(algorithms)
