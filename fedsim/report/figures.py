"""The sweep report's matplotlib figures: curves over rounds, accuracy against a
heterogeneity measure, the accuracy drop against IID, model heterogeneity, the
per-party accuracy distribution, and the label distributions.

Each ``*_figure`` function builds and returns a :class:`matplotlib.figure.Figure` (None
when there is nothing to draw) on its own Agg canvas, without pyplot's global state, so
that a test can read what is drawn (lines, labels, scales, legend boxes);
:func:`save_figure` writes it.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from partitioners import plot_label_distribution

from ..plots import log_y_axis
from ..store import read_jsonl
from ..sweeps import STRATEGY_FACTORS, mean_std
from .drops import DropRow, drop_grid
from .load import Layout, RunInfo, SweepView, combo_label, finished_runs, partition_factors, read_json_or_none

HETEROGENEITY_SERIES = (
    ("client_drift_mean", "client drift (mean)"),
    ("update_cosine_mean", "update cosine (mean)"),
    ("gradient_diversity", "gradient diversity"),
)


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on its own Agg canvas (no pyplot state to leak or close)."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG to ``path``."""
    fig.savefig(path, dpi=dpi)
    return path


def colors_of(labels: Sequence[str]) -> dict[str, Any]:
    """One color per series label, in order (tab10, or tab20 beyond 10 labels)."""
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lbl: cmap(i % cmap.N) for i, lbl in enumerate(labels)}


def aggregate_curves(runs: Sequence[RunInfo], key: str) -> tuple[list[int], list[float], list[float]]:
    """Rounds every run recorded ``key`` in, the mean over runs and the sample std (0 for one run)."""
    per_run = []
    for r in runs:
        d = {
            int(row["round"]): float(row[key])
            for row in r.history
            if row.get(key) is not None and math.isfinite(float(row[key]))
        }
        if d:
            per_run.append(d)
    if not per_run:
        return [], [], []
    rounds = sorted(set.intersection(*[set(d) for d in per_run]))
    means, stds = [], []
    for x in rounds:
        m, sd, _ = mean_std(d[x] for d in per_run)
        means.append(m)
        stds.append(sd or 0.0)
    return rounds, means, stds


def _grid(n: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` panels, at most three a row."""
    ncols = min(3, max(1, n))
    return math.ceil(n / ncols), ncols


def panel_title(view: SweepView, layout: Layout, combo: Sequence[str], runs: Sequence[RunInfo]) -> str:
    """What a panel's runs share: its settings (``lr=0.1``; a partition label as it is,
    ``Dir(0.5)``), plus the strategy and the partition when all its runs have the same one
    and the lines do not already tell (``fedprox, Dir(0.5)``)."""
    partition_keys = {f.key for f in partition_factors(view)}
    parts = [label if f.key in partition_keys else f"{f.short}={label}" for f, label in zip(layout.panels, combo)]
    strategies = {r.strategy for r in runs}
    if (layout.series is None or layout.series.key not in STRATEGY_FACTORS) and len(strategies) == 1:
        parts.insert(0, strategies.pop())
    partitions = {r.partition for r in runs}
    if (
        not any(f.key in partition_keys for f in layout.panels)
        and layout.series not in partition_factors(view)
        and len(partitions) == 1
    ):
        parts.append(partitions.pop())
    return ", ".join(parts) or combo_label(combo)


def _int_rounds(ax: Axes) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def curves_figure(
    view: SweepView, layout: Layout, keys: Sequence[tuple[str, str, str]], ylabel: str, yscale: str = "linear"
) -> Figure | None:
    """One panel per setting, one line per series (mean over seeds, ± std band).

    ``keys``: (metrics key, line style, legend suffix); accuracies are drawn in %.
    ``yscale="log"`` for losses: a diverging run is then a rising line, not one spike
    that flattens every other curve (a band reaching below zero runs off the axis).
    """
    runs = finished_runs(view)
    combos = layout.panel_combos() or [()]
    labels = layout.series_labels(view)
    colors = colors_of(labels)
    nrows, ncols = _grid(len(combos))
    fig = new_figure(5 * ncols, 3.6 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    drawn = False
    for i, combo in enumerate(combos):
        ax = axes[i // ncols][i % ncols]
        in_panel = [r for r in runs if layout.panel_of(r) == tuple(combo)]
        for lbl in labels:
            members = [r for r in in_panel if layout.series_of(r) == lbl]
            for key, style, suffix in keys:
                xs, ms, sds = aggregate_curves(members, key)
                if not xs:
                    continue
                drawn = True
                scale = 100 if "accuracy" in key else 1
                ax.plot(
                    xs,
                    [m * scale for m in ms],
                    style,
                    color=colors[lbl],
                    label=f"{lbl}{suffix}",
                    marker="o" if len(xs) < 25 else None,
                    ms=3,
                )
                if any(sds) and key == keys[0][0]:  # one band per line keeps the panel readable
                    ax.fill_between(
                        xs,
                        [(m - s) * scale for m, s in zip(ms, sds)],
                        [(m + s) * scale for m, s in zip(ms, sds)],
                        color=colors[lbl],
                        alpha=0.15,
                        linewidth=0,
                    )
        ax.set_title(panel_title(view, layout, combo, in_panel))
        ax.set_xlabel("round")
        _int_rounds(ax)
        ax.set_ylabel(ylabel)
        if yscale == "log":
            log_y_axis(ax)
        else:
            ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for j in range(len(combos), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    if not drawn:
        return None
    fig.tight_layout()
    return fig


def het_value(r: RunInfo, measure: str) -> float | None:
    """A run's value of ``measure``: summary.json's ``heterogeneity[measure]``, or the
    partition's ``beta`` (Dirichlet and quantity-skew partitions only)."""
    s = r.summary or {}
    if measure == "beta":
        part = s.get("partition") or {}
        return part.get("beta") if part.get("scheme") in ("dirichlet", "quantity-skew") else None
    v = (s.get("heterogeneity") or {}).get(measure)
    return float(v) if v is not None else None


#: x-axis titles of the measures whose direction is known (beta is the inverse of heterogeneity)
MEASURE_AXIS = {
    "beta": "Dirichlet concentration β (higher = closer to IID)",
    **{
        m: f"data heterogeneity: {m} (higher = more heterogeneous)"
        for m in ("tv_mean", "tv_max", "js_mean", "js_max", "hellinger_mean", "hellinger_max", "size_cv")
    },
    **{
        m: f"{m} (higher = closer to IID)"
        for m in ("effective_classes_mean", "effective_classes_min", "classes_per_party_mean")
    },
}


def _on_iid_edge(r: RunInfo, measure: str) -> bool:
    """An IID run on the beta axis: beta -> infinity, drawn at the axis' right edge."""
    return measure == "beta" and r.scheme == "iid"


def off_axis_settings(view: SweepView, measure: str) -> list[str]:
    """The partitions of finished runs that the accuracy-against-``measure`` figure
    cannot place, with why: ``#C=1 (label-quantity: no beta)``."""
    out: list[str] = []
    for r in finished_runs(view):
        if r.value("test_accuracy") is None or het_value(r, measure) is not None or _on_iid_edge(r, measure):
            continue
        why = f"{r.scheme}: no beta" if measure == "beta" else f"no {measure} in summary.json"
        text = f"{r.partition} ({why})"
        if text not in out:
            out.append(text)
    return out


def accuracy_vs_heterogeneity_figure(view: SweepView, layout: Layout, measure: str) -> Figure | None:
    """Final test accuracy of every run against a data-heterogeneity measure, per series.

    Dots are runs; the line joins the mean (over seeds) of each setting, sorted by the
    setting's mean measure. For ``beta`` (a log axis) the IID runs, beta -> infinity,
    stand at the right edge past a dashed rule, under the tick ``IID``, joined to the
    largest beta by a dotted line. Runs without a value (``#C=1`` has no beta) are named
    under the axes (:func:`off_axis_settings`).
    """
    done = [r for r in finished_runs(view) if r.value("test_accuracy") is not None]
    on_axis = [r for r in done if het_value(r, measure) is not None]
    if not on_axis:
        return None
    iid = [r for r in done if _on_iid_edge(r, measure)]
    xs = sorted({het_value(r, measure) for r in on_axis})
    x_iid = None
    if iid:  # IID past the largest beta by half a decade, or a quarter of the betas' span
        lo, hi = math.log10(xs[0]), math.log10(xs[-1])
        x_iid = 10 ** (hi + max(0.5, 0.25 * (hi - lo)))

    def x_of(r: RunInfo) -> float:
        return x_iid if _on_iid_edge(r, measure) else het_value(r, measure)

    labels = layout.series_labels(view)
    colors = colors_of(labels)
    off = off_axis_settings(view, measure)
    fig = new_figure(6.5, 4.2 + (0.3 if off else 0.0))
    ax = fig.subplots()
    handles = []
    for lbl in labels:
        members = [r for r in on_axis + iid if layout.series_of(r) == lbl]
        if not members:
            continue
        ax.scatter(
            [x_of(r) for r in members],
            [100 * r.value("test_accuracy") for r in members],
            color=colors[lbl],
            alpha=0.45,
            s=18,
        )
        pts, edge = [], []
        for combo in layout.panel_combos() or [()]:
            group = [r for r in members if layout.panel_of(r) == tuple(combo)]
            if group:
                x, _, _ = mean_std(x_of(r) for r in group)
                y, _, _ = mean_std(r.value("test_accuracy") for r in group)
                (edge if all(_on_iid_edge(r, measure) for r in group) else pts).append((x, 100 * y))
        pts.sort()
        if pts:
            handles += ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=colors[lbl], label=lbl, ms=4)
        if edge:
            ax.plot([p[0] for p in edge], [p[1] for p in edge], "D", color=colors[lbl], label=f"{lbl} (IID)", ms=5)
            if pts:  # IID is the limit beta -> infinity of the line
                ax.plot([pts[-1][0], edge[0][0]], [pts[-1][1], edge[0][1]], ":", color=colors[lbl])
    if measure == "beta":
        ax.set_xscale("log")
        ticks, names = list(xs), [f"{x:g}" for x in xs]
        if x_iid is not None:
            ax.axvline(math.sqrt(xs[-1] * x_iid), color="gray", linestyle="--", linewidth=0.8)
            ticks.append(x_iid)
            names.append("IID")
        ax.set_xticks(ticks, names)  # the settings' betas: log-axis minor ticks would label values nobody ran
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(MEASURE_AXIS.get(measure, measure))
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3)
    if handles:
        ax.legend(handles=handles, fontsize=8)
    if off:
        fig.text(0.01, 0.01, "not on this axis: " + "; ".join(off), fontsize=7, color="dimgray", ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        fig.tight_layout()
    return fig


def drops_figure(drops: Sequence[DropRow], view: SweepView) -> Figure | None:
    """Bars: the drop against IID (percentage points) of every setting, one bar per series."""
    if not drops:
        return None
    layout, series, keys, by = drop_grid(drops, view)
    colors = colors_of(layout.series_labels(view))
    fig = new_figure(max(5.0, 1.2 * len(keys) * max(1, len(series)) / 2 + 2) + 1.5, 4)  # + 1.5 in for the legend
    ax = fig.subplots()
    width = 0.8 / max(1, len(series))
    for j, s in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(keys))]
        ys = [100 * by[(c, st, s)].drop if (c, st, s) in by else 0.0 for c, st in keys]
        ax.bar(xs, ys, width=width, color=colors[s], label=s)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([" / ".join(c + st) for c, st in keys], rotation=20, ha="right")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("accuracy drop vs IID (pp)")
    ax.grid(axis="y", alpha=0.3)
    # outside the axes, right of them: inside, the legend covers whichever bar is tallest in its corner
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        fontsize=8,
        title=layout.series.short if layout.series is not None else None,
        title_fontsize=8,
    )
    fig.tight_layout()  # counts the legend: the axes shrink to leave it room inside the figure
    return fig


def model_heterogeneity_figure(view: SweepView, layout: Layout) -> Figure | None:
    """Rows: client drift, update cosine, gradient diversity; columns: settings; lines: series."""
    runs = finished_runs(view)
    combos = layout.panel_combos() or [()]
    labels = layout.series_labels(view)
    colors = colors_of(labels)
    ncols = len(combos)
    fig = new_figure(4.2 * ncols, 2.8 * len(HETEROGENEITY_SERIES))
    axes = fig.subplots(len(HETEROGENEITY_SERIES), ncols, squeeze=False)
    drawn = False
    for j, combo in enumerate(combos):
        for i, (key, name) in enumerate(HETEROGENEITY_SERIES):
            ax = axes[i][j]
            for lbl in labels:
                members = [r for r in runs if layout.series_of(r) == lbl and layout.panel_of(r) == tuple(combo)]
                xs, ms, sds = aggregate_curves(members, key)
                if not xs:
                    continue
                drawn = True
                ax.plot(xs, ms, color=colors[lbl], label=lbl)
                if any(sds):
                    ax.fill_between(
                        xs,
                        [m - s for m, s in zip(ms, sds)],
                        [m + s for m, s in zip(ms, sds)],
                        color=colors[lbl],
                        alpha=0.15,
                        linewidth=0,
                    )
            if i == 0:
                ax.set_title(panel_title(view, layout, combo, [r for r in runs if layout.panel_of(r) == tuple(combo)]))
            if j == 0:
                ax.set_ylabel(name)
            if i == len(HETEROGENEITY_SERIES) - 1:
                ax.set_xlabel("round")
            _int_rounds(ax)
            ax.grid(alpha=0.3)
    if not drawn:
        return None
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def party_accuracies(run: RunInfo) -> dict[str, list[float]]:
    """A run's per-party accuracies of its last per-party evaluation (``parties.jsonl``),
    by mode, over the parties that train (not the held-out ones)."""
    rows = [r for r in read_jsonl(run.path / "parties.jsonl") if not r.get("holdout")]
    if not rows:
        return {}
    last = max(r["round"] for r in rows)
    out: dict[str, list[float]] = {}
    for r in rows:
        if r["round"] == last:
            out.setdefault(r["mode"], []).append(float(r["accuracy"]))
    return out


def party_distribution_figure(view: SweepView, layout: Layout) -> Figure | None:
    """Per-party accuracy on the parties' own test data: one box per algorithm (its own
    model; ``+FT`` boxes for fine-tuned global models, ``(global)`` for an algorithm
    without personal models), one panel per setting; parties of every seed pooled.
    The spread and the lower whisker show what a mean hides: the parties left behind."""
    runs = [r for r in finished_runs(view) if (r.path / "parties.jsonl").exists()]
    if not runs:
        return None
    combos = layout.panel_combos() or [()]
    nrows, ncols = _grid(len(combos))
    fig = new_figure(max(5.0, 0.9 * len(layout.series_labels(view)) + 2) * ncols, 3.8 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    drawn = False
    for i, combo in enumerate(combos):
        ax = axes[i // ncols][i % ncols]
        in_panel = [r for r in runs if layout.panel_of(r) == tuple(combo)]
        boxes: dict[str, list[float]] = {}
        for lbl in layout.series_labels(view):
            for r in (r for r in in_panel if layout.series_of(r) == lbl):
                accs = party_accuracies(r)
                own = accs.get("personal")
                boxes.setdefault(lbl if own is not None else f"{lbl} (global)", []).extend(
                    100 * a for a in (own if own is not None else accs.get("local", []))
                )
                if accs.get("finetune"):
                    boxes.setdefault(f"{lbl}+FT", []).extend(100 * a for a in accs["finetune"])
        boxes = {k: v for k, v in boxes.items() if v}
        if boxes:
            drawn = True
            ax.boxplot(list(boxes.values()), tick_labels=list(boxes), showmeans=True)
            ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.set_title(panel_title(view, layout, combo, in_panel))
        ax.set_ylabel("party's test accuracy (%)")
        ax.grid(alpha=0.3, axis="y")
    for j in range(len(combos), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    if not drawn:
        return None
    fig.tight_layout()
    return fig


def label_distribution(run_dir: Path, dest: Path, title: str) -> bool:
    """Copy the run's plots/label_distribution.png, or draw it from partition.json."""
    src = run_dir / "plots" / "label_distribution.png"
    if src.exists() and src.stat().st_size > 0:
        shutil.copyfile(src, dest)
        return True
    part = read_json_or_none(run_dir / "partition.json")
    if part and part.get("class_counts"):
        plot_label_distribution(part["class_counts"], dest, title=title)
        return dest.exists()
    return False


def fig_name(text: str) -> str:
    """A figure file name that needs no escaping in a Markdown link."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text.replace("#", "n"))
