"""Reports of a run or a sweep directory: ``report.md`` with its tables and PNG figures.

``report(dir)`` detects what ``dir`` is from its files:

* a **run directory** (``config.yaml`` with ``metrics.jsonl`` or ``summary.json``): its
  accuracy and loss curves and model heterogeneity over rounds (:func:`fedsim.rundir.plots.plot_run`,
  into ``plots/``), its label distribution, and its summary and data heterogeneity as
  tables;
* a **sweep directory** (``sweep.json`` or ``summary.csv``, or sub-directories that are
  runs): the results table (mean ± sample std over seeds, as in ``table.md``), the model
  selection if any, and into ``figures/``: test accuracy and loss over rounds (one panel
  per partition setting, one line per strategy: the mean over seeds with a ± std band),
  final test accuracy against a data-heterogeneity measure (``tv_mean`` by default, or
  any key of summary.json's ``heterogeneity``, or ``beta``), the accuracy drop of every
  setting relative to the IID setting of the same strategy (bar chart and table), model
  heterogeneity over rounds (client drift, update cosine, gradient diversity),
  with ``eval.local_test`` the accuracy on the parties' own test data (own model and
  global model per algorithm) and its per-party distribution (box plots), and the
  label distribution of each partition setting (its first seed).

Reading the directories is :mod:`.load`, the drop against IID :mod:`.drops`, the
curves over rounds :mod:`.curves`, the other figures :mod:`.figures`; this module
writes the Markdown.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from fedsim.errors import RunDirError
from fedsim.report.clock import accuracy_vs_time_figure, run_time_figure, time_lines
from fedsim.report.comm import comm_figure
from fedsim.report.curves import curves_figure, model_heterogeneity_figure
from fedsim.report.drops import DropRow, accuracy_drops, drop_table
from fedsim.report.figures import (
    MEASURE_AXIS,
    accuracy_vs_heterogeneity_figure,
    drops_figure,
    fig_name,
    label_distribution,
    off_axis_settings,
    party_distribution_figure,
    save_figure,
)
from fedsim.report.load import (
    Layout,
    RunInfo,
    SweepView,
    combo_label,
    finished_runs,
    is_done,
    is_run_dir,
    layout_of,
    load_sweep,
    partition_factors,
)
from fedsim.report.privacy import has_privacy, privacy_figure, privacy_table
from fedsim.rundir.plots import plot_run
from fedsim.rundir.store import RunStore, atomic_write_text, read_json, read_jsonl
from fedsim.sweeps import (
    DONE,
    INDEX_FILE,
    METRIC_COLUMNS,
    PARTY_COLUMNS,
    attack_table,
    comm_table,
    fairness_table,
    make_table,
    per_mb,
    personal_table,
    time_columns,
)
from fedsim.util.formatting import format_percent, format_value

__all__ = ["DropRow", "RunInfo", "SweepView", "accuracy_drops", "load_sweep", "report", "report_run", "report_sweep"]

log = logging.getLogger(__name__)

FIGURES = "figures"


def _img(rel: str, alt: str) -> str:
    """A Markdown image link."""
    return f"![{alt}]({rel})"


def _cut_caption(cut: list[str]) -> str:
    """The words for the diverged runs a figure's y axis leaves out."""
    if not cut:
        return ""
    n = len(cut)
    return (
        f" The y axis covers the runs that did not diverge: {n} diverged run{'s' if n > 1 else ''} "
        f"({', '.join(cut)}) leave{'' if n > 1 else 's'} it where the triangle is."
    )


def _save(fig: Figure | None, path: Path) -> bool:
    """Write ``fig`` to ``path`` if there is one; whether there was."""
    if fig is None:
        return False
    save_figure(fig, path)
    return True


def report_sweep(sweep_dir: Path, measure: str = "tv_mean") -> Path:
    """Write a sweep directory's ``report.md`` and its ``figures/``; return the report's path."""
    view = load_sweep(sweep_dir)
    layout = layout_of(view)
    figs = sweep_dir / FIGURES
    figs.mkdir(exist_ok=True)
    ended = finished_runs(view)
    diverged = [r for r in ended if r.diverged]
    failed = [r for r in view.runs if r.status not in DONE]
    band = _band_caption(layout, bool(diverged))
    rows = _table_rows(view)
    md = _header(view, ended, diverged, failed)
    md += _results_section(view, rows)
    md += _diverged_section(diverged)
    md += _attack_and_party_sections(view, layout, rows, figs, bool(diverged))
    md += _selection_section(sweep_dir)
    md += _curve_sections(view, layout, figs, band)
    md += _time_section(view, layout, figs)
    md += _heterogeneity_section(view, measure, figs, bool(diverged))
    md += _privacy_section(view, figs)
    md += _comm_section(view, rows, figs)
    md += _drop_section(view, figs)
    md += _model_heterogeneity_section(view, layout, figs, band)
    md += _label_sections(view, figs)
    md += _failed_section(failed)
    path = sweep_dir / "report.md"
    atomic_write_text(path, "\n".join(md).rstrip() + "\n")
    log.info("wrote %s", path)
    return path


def _header(view: SweepView, ended: list[RunInfo], diverged: list[RunInfo], failed: list[RunInfo]) -> list[str]:
    """The title and the count of runs by how they ended."""
    return [
        f"# Sweep report: {view.name}",
        "",
        f"{len(view.runs)} runs: {len(ended) - len(diverged)} finished, {len(diverged)} diverged, "
        f"{len(failed)} not finished"
        + (f"; seeds {view.seeds}" if view.seeds else "")
        + "."
        + (" Every mean that includes a diverged run is marked † (see Diverged runs)." if diverged else ""),
    ]


def _table_rows(view: SweepView) -> list[dict[str, Any]]:
    """Every run as a row of the sweep's tables: its factors, status and summary.csv's metrics."""
    return [
        {
            **r.factors,
            "status": r.status,
            "diverged_round": r.diverged_round,
            **{k: r.value(k) for k in (*METRIC_COLUMNS, *PARTY_COLUMNS)},
            **time_columns(r.summary or {}),
        }
        for r in view.runs
    ]


def _results_section(view: SweepView, rows: list[dict[str, Any]]) -> list[str]:
    """The results table, as the sweep's table.md has it."""
    return ["", "## Results", "", make_table(rows, view.factors, view.seeds)]


def _diverged_section(diverged: list[RunInfo]) -> list[str]:
    """A row per diverged run: the round, the reason, its final test accuracy."""
    if not diverged:
        return []
    md = [
        "## Diverged runs",
        "",
        "Their accuracies are in the means marked †; fedsim stopped each at the round named "
        "(`federation.on_divergence: stop`) or trained on and kept the mark (`continue`).",
        "",
        "| run | round | reason | final test accuracy (%) |",
        "| --- | ---: | --- | ---: |",
    ]
    for r in diverged:
        reason = str(r.value("divergence_reason") or "").replace("|", "/")
        md.append(f"| {r.name} | {r.diverged_round} | {reason} | {format_percent(r.value('test_accuracy'))} |")
    return md + [""]


def _attack_and_party_sections(
    view: SweepView, layout: Layout, rows: list[dict[str, Any]], figs: Path, diverged: bool
) -> list[str]:
    """The attacks x defences table, and the accuracy on the parties' own test data with
    its per-party figure (each only where the sweep has it)."""
    md: list[str] = []
    attacked = attack_table(rows, view.factors, view.seeds)
    if attacked is not None:
        md += ["## Attacks and defences", "", attacked]
    personal = personal_table(rows, view.factors, view.seeds)
    if not personal:
        return md
    md += ["## Accuracy on the parties' own test data", "", personal]
    fair = fairness_table(rows, view.factors, view.seeds)
    if fair:
        md += ["## Fairness over the parties", "", fair]
    if _save(party_distribution_figure(view, layout), figs / "party_accuracy.png"):
        md += [
            "Each party's accuracy on its own test data after the last round (its own model; +FT: the global "
            "model fine-tuned; (global): the global model), every seed's parties pooled; the triangle is the mean"
            + ("; † a box pools the parties of a diverged run." if diverged else "."),
            "",
            _img(f"{FIGURES}/party_accuracy.png", "per-party accuracy"),
            "",
        ]
    return md


def _selection_section(sweep_dir: Path) -> list[str]:
    """The sweep's selection.md without its title, where it has one."""
    sel = sweep_dir / "selection.md"
    if not sel.exists():
        return []
    text = sel.read_text().split("\n", 1)
    body = text[1] if text[0].startswith("# ") and len(text) > 1 else sel.read_text()
    return ["## Model selection", "", body.strip(), ""]


def _figure_section(title: str, fname: str, ok: bool, note: str = "", caption: str = "") -> list[str]:
    """A section with a figure of ``figures/`` and its caption, or ``note`` where none was drawn."""
    md = [f"## {title}", ""]
    if ok:
        return md + ([caption, ""] if caption else []) + [_img(f"{FIGURES}/{fname}", title), ""]
    return md + [note or "No data for this figure.", ""]


def _band_caption(layout: Layout, diverged: bool) -> str:
    """What a curve over rounds is (the mean over seeds with its band) and how panels and lines split the runs."""
    by = f", one line per {layout.series.short}" if layout.series is not None else ""
    panels = f"one panel per {' / '.join(f.short for f in layout.panels)}" if layout.panels else "one panel"
    if diverged:
        return (
            f"Mean over the seeds that did not diverge, with a ± sample-std band; {panels}{by}. A diverged run "
            "is not in the mean: it is its own thin line with an X at the round it diverged."
        )
    return f"Mean over seeds with a ± sample-std band; {panels}{by}."


def _curve_sections(view: SweepView, layout: Layout, figs: Path, band: str) -> list[str]:
    """Test accuracy and loss over rounds."""
    ok = _save(
        curves_figure(view, layout, [("test_accuracy", "-", "")], "test accuracy (%)"), figs / "accuracy_curves.png"
    )
    md = _figure_section("Test accuracy over rounds", "accuracy_curves.png", ok, caption=band)
    cut: list[str] = []
    losses = [("test_loss", "-", " (test)"), ("train_loss", "--", " (train)")]
    ok = _save(curves_figure(view, layout, losses, "loss (log scale)", yscale="log", cut=cut), figs / "loss_curves.png")
    caption = "Test loss (solid) and local training loss (dashed), on a log axis. " + band + _cut_caption(cut)
    return md + _figure_section("Loss over rounds", "loss_curves.png", ok, caption=caption)


def _time_section(view: SweepView, layout: Layout, figs: Path) -> list[str]:
    """Test accuracy against simulated time (runs with a ``system`` source only)."""
    fig = accuracy_vs_time_figure(view, layout)
    if fig is None:
        return []
    _save(fig, figs / "accuracy_vs_time.png")
    caption = (
        "Test accuracy against simulated hours (system.*), beside accuracy over rounds: one thin line per run "
        "(the seeds' rounds end at different times, so they are not averaged), one colour per series."
    )
    return _figure_section("Test accuracy over simulated time", "accuracy_vs_time.png", True, caption=caption)


def _heterogeneity_section(view: SweepView, measure: str, figs: Path, diverged: bool) -> list[str]:
    """Final test accuracy against ``measure`` (a data-heterogeneity measure or beta)."""
    fname = f"accuracy_vs_{fig_name(measure)}.png"
    ok = _save(accuracy_vs_heterogeneity_figure(view, measure), figs / fname)
    off = off_axis_settings(view, measure)
    points = (
        " Dots are runs; a square with an error bar is a setting's mean ± sample std over seeds (settings named "
        "above the axes, not joined: they are different partitions)"
        + ("; x: a diverged run, † a mean that includes one." if diverged else ".")
    )
    if measure == "beta":
        title = "Accuracy against the Dirichlet concentration beta"
        caption = (
            "Final test accuracy against beta, the concentration of the partition's Dirichlet draw: the higher, the "
            "closer to IID. IID runs (beta -> infinity) stand at the right edge." + points
        )
        missing = "No run has a Dirichlet beta."
    else:
        title = f"Accuracy against data heterogeneity ({measure})"
        caption = f"Final test accuracy against {MEASURE_AXIS.get(measure, measure)}." + points
        missing = f"No run reports the heterogeneity measure '{measure}'."
    not_on_axis = f" Not on this axis: {'; '.join(off)}." if off else ""
    return _figure_section(title, fname, ok, missing + not_on_axis, caption=caption + not_on_axis)


def _privacy_section(view: SweepView, figs: Path) -> list[str]:
    """A sweep over ``privacy.*``: the table and the figure of accuracy against the epsilon spent."""
    if not has_privacy(view):
        return []
    ok = _save(privacy_figure(view), figs / "privacy_utility.png")
    return ["## Privacy against utility", "", privacy_table(view), ""] + _figure_section(
        "Accuracy against epsilon",
        "privacy_utility.png",
        ok,
        "No run with a finite epsilon.",
        caption="Final test accuracy against the epsilon spent (mean over seeds); dashed: the same strategy without DP.",
    )


def _comm_section(view: SweepView, rows: list[dict[str, Any]], figs: Path) -> list[str]:
    """Every setting's bytes and accuracy per MB, and the figure of accuracy against cumulative MB."""
    table = comm_table(rows, view.factors, view.seeds)
    if not table:
        return []
    ok = _save(comm_figure(view), figs / "accuracy_vs_mb.png")
    return ["## Communication", "", table, ""] + _figure_section(
        "Accuracy against MB sent",
        "accuracy_vs_mb.png",
        ok,
        caption="Test accuracy at each evaluated round against the MB sent up and down by then (mean over the "
        "seeds that did not diverge), one line per setting.",
    )


def _drop_section(view: SweepView, figs: Path) -> list[str]:
    """The accuracy drop of every setting against IID: the table and the bar chart."""
    drops = accuracy_drops(view)
    md = ["## Accuracy drop relative to IID", ""]
    if not drops:
        return md + ["No IID setting in this sweep: no drop to compute.", ""]
    _save(drops_figure(drops, view), figs / "accuracy_drop.png")
    return md + [
        drop_table(drops, view),
        "Error bars: the sample std over seeds of the paired drop"
        + ("; a hatched bar with † includes a diverged run." if any(d.diverged for d in drops) else "."),
        "",
        _img(f"{FIGURES}/accuracy_drop.png", "accuracy drop vs IID"),
        "",
    ]


def _model_heterogeneity_section(view: SweepView, layout: Layout, figs: Path, band: str) -> list[str]:
    """Client drift, update cosine and gradient diversity over rounds."""
    cut: list[str] = []
    ok = _save(model_heterogeneity_figure(view, layout, cut), figs / "model_heterogeneity.png")
    return _figure_section(
        "Model heterogeneity over rounds",
        "model_heterogeneity.png",
        ok,
        caption="Client drift (mean distance of the client models to the aggregate, relative), mean pairwise cosine "
        "of the updates and gradient diversity, each round. " + band + _cut_caption(cut),
    )


def _label_settings(view: SweepView) -> dict[tuple, RunInfo]:
    """One run per partition setting, in grid order: its lowest-seed run with a partition.json
    (without partition factors, the first such run)."""
    pf = partition_factors(view)
    settings: dict[tuple, RunInfo] = {}
    for r in sorted(view.runs, key=lambda r: r.seed if r.seed is not None else 0):
        key = tuple(r.factors.get(f.key) for f in pf)
        if key not in settings and (r.path / "partition.json").exists():
            settings[key] = r
    order = {combo: i for i, combo in enumerate(itertools.product(*[f.labels for f in pf]))}
    settings = dict(sorted(settings.items(), key=lambda kv: order.get(kv[0], len(order))))
    if not pf and settings:
        settings = dict(list(settings.items())[:1])
    return settings


def _label_sections(view: SweepView, figs: Path) -> list[str]:
    """The label distribution of each partition setting (its first seed)."""
    md = ["## Label distribution", ""]
    settings = _label_settings(view)
    for key, r in settings.items():
        label = combo_label(key) if partition_factors(view) else "all runs"
        fname = f"label_{fig_name(label)}.png"
        if label_distribution(r.path, figs / fname, label):
            md += [
                f"### {label}",
                "",
                f"Seed {r.seed} ({r.name}).",
                "",
                _img(f"{FIGURES}/{fname}", f"label distribution {label}"),
                "",
            ]
    if not settings:
        md += ["No partition.json found.", ""]
    return md


def _failed_section(failed: list[RunInfo]) -> list[str]:
    """A row per run that did not finish, with its error."""
    if not failed:
        return []
    md = ["## Runs not finished", "", "| run | status | error |", "| --- | --- | --- |"]
    md += [f"| {r.name} | {r.status} | {(r.error or '').replace('|', '/')} |" for r in failed]
    return md + [""]


_RUN_KEYS = (
    "status",
    "diverged_round",
    "divergence_reason",
    "strategy",
    "dataset",
    "model",
    "rounds",
    "test_accuracy",
    "best_test_accuracy",
    "best_round",
    "test_f1_macro",
    "test_precision_macro",
    "test_recall_macro",
    "test_loss",
    "train_accuracy",
    "train_test_gap",
    "val_accuracy",
    "local_test_accuracy",
    "local_test_accuracy_std",
    "local_test_accuracy_worst10",
    "local_test_accuracy_best10",
    "local_test_accuracy_worst",
    "local_test_accuracy_jain",
    "personal_test_accuracy",
    "personal_test_accuracy_std",
    "personal_test_accuracy_worst10",
    "personal_test_accuracy_worst",
    "personal_test_accuracy_jain",
    "finetune_test_accuracy",
    "holdout_local_test_accuracy",
    "holdout_personal_test_accuracy",
    "model_parameters",
    "bytes_up_total",
    "bytes_down_total",
    "failures_total",
    "wall_time_s",
    "seed",
    "config_hash",
    "attack",
    "malicious_parties",
    "defence",
    "attack_success_rate",
)


def _comm_rows(summary: dict) -> list[str]:
    """The run's MB up and down and its accuracy per MB sent (``fedsim/sweeps/comm_tables.py``)."""
    if summary.get("bytes_up_total") is None or summary.get("bytes_down_total") is None:
        return []
    acc = per_mb(summary)
    return [
        f"| upload MB | {summary['bytes_up_total'] / 1e6:.3f} |",
        f"| download MB | {summary['bytes_down_total'] / 1e6:.3f} |",
        f"| test accuracy (%) per MB | {'–' if acc is None else f'{acc:.3f}'} |",
    ]


def report_run(run_dir: Path) -> Path:
    """Write a run directory's ``report.md`` (and its ``plots/``); return the report's path."""
    store = RunStore(run_dir)
    summary = read_json(store.summary, "summary") if store.summary.exists() else None
    md = [f"# Run report: {run_dir.name}", ""]
    if not is_done(summary):
        md += ["The run has not finished (no finished summary.json); the curves show the rounds recorded so far.", ""]
    if summary:
        md += ["## Summary", "", "| metric | value |", "| --- | ---: |"]
        for k in _RUN_KEYS:
            if k in summary:
                md.append(f"| {k} | {format_value(summary[k])} |")
        if summary.get("partition"):
            md.append(f"| partition | {format_value(summary['partition'])} |")
        md += _comm_rows(summary)
        md.append("")
        het = summary.get("heterogeneity") or {}
        if het:
            md += ["## Data heterogeneity", "", "| measure | value |", "| --- | ---: |"]
            md += [f"| {k} | {format_value(v)} |" for k, v in het.items() if not isinstance(v, (list, dict))]
            md.append("")
        md += time_lines(summary)
    plots = plot_run(store)
    names = {p.name: p for p in plots}
    for fname, title in (
        ("accuracy.png", "Accuracy over rounds"),
        ("loss.png", "Loss over rounds"),
        ("heterogeneity.png", "Model heterogeneity over rounds"),
    ):
        if fname in names:
            md += [f"## {title}", "", _img(f"plots/{fname}", title), ""]
    if plots and _save(run_time_figure(read_jsonl(store.metrics)), store.plots / "accuracy_vs_time.png"):
        md += [
            "## Accuracy over simulated time",
            "",
            _img("plots/accuracy_vs_time.png", "accuracy over simulated time"),
            "",
        ]
    if not plots:
        md += ["No rounds recorded yet (metrics.jsonl is empty).", ""]
    dest = store.plots / "label_distribution.png"
    store.plots.mkdir(parents=True, exist_ok=True)
    if dest.exists() or label_distribution(run_dir, dest, run_dir.name):
        md += ["## Label distribution", "", _img("plots/label_distribution.png", "label distribution"), ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(md).rstrip() + "\n")
    log.info("wrote %s", path)
    return path


def report(dir: str | Path, measure: str = "tv_mean") -> Path:
    """Write ``report.md`` (and its PNGs) for a run or a sweep directory; return its path.

    ``measure`` is the x axis of the accuracy-against-heterogeneity figure: a key of
    summary.json's ``heterogeneity`` (``tv_mean``, ``js_mean``, ``hellinger_mean``,
    ``size_cv``, ...) or ``beta``.
    """
    path = Path(dir)
    if not path.is_dir():
        raise RunDirError(f"'{path}' is not a directory; give a run directory or a sweep directory")
    if (path / INDEX_FILE).exists() or (path / "summary.csv").exists():
        return report_sweep(path, measure)
    if (path / "config.yaml").exists():
        return report_run(path)
    if any(is_run_dir(p) for p in path.iterdir() if p.is_dir()):
        return report_sweep(path, measure)
    raise RunDirError(
        f"'{path}' is neither a run directory (config.yaml) nor a sweep directory (sweep.json, summary.csv or run directories)"
    )
