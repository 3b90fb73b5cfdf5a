"""The sweep report's matplotlib figures: accuracy against a heterogeneity measure,
the accuracy drop against IID, the per-party accuracy distribution, the label
distributions, and the helpers every figure shares (the curves over rounds are
:mod:`.curves`).

Each ``*_figure`` function builds and returns a :class:`matplotlib.figure.Figure` (None
when there is nothing to draw) on its own Agg canvas, without pyplot's global state, so
that a test can read what is drawn (lines, labels, scales, legend boxes);
:func:`save_figure` writes it.
"""

from __future__ import annotations

import itertools
import math
import re
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullLocator
from matplotlib.transforms import ScaledTranslation

from fedsim.report.drops import DropRow, drop_grid
from fedsim.report.load import (
    Layout,
    RunInfo,
    SweepView,
    combo_label,
    finished_runs,
    partition_factors,
    read_json_or_none,
)
from fedsim.rundir.store import read_jsonl
from fedsim.sweeps import STRATEGY_FACTORS, mean_std
from partitioners import plot_label_distribution


def new_figure(width: float, height: float, constrained: bool = False) -> Figure:
    """An empty figure on its own Agg canvas (no pyplot state to leak or close).

    ``constrained``: matplotlib's constrained layout, which keeps every label, title and
    a legend placed ``"outside ..."`` inside the figure (the multi-panel figures)."""
    fig = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


#: one marker per series, so that lines that coincide (FedProx at a small mu on FedAvg)
#: and a page printed in grey still tell the series apart
SERIES_MARKERS = ("o", "s", "^", "D", "v", "P", "*", "<", ">", "h")


#: one line style per series where the style says nothing else (one metric a panel):
#: a dashed line over a solid one shows both where two series coincide
SERIES_STYLES = ("-", "--", "-.", ":")


def markers_of(labels: Sequence[str]) -> dict[str, str]:
    """One marker per series label, in order."""
    return {lbl: SERIES_MARKERS[i % len(SERIES_MARKERS)] for i, lbl in enumerate(labels)}


def styles_of(labels: Sequence[str]) -> dict[str, str]:
    """One line style per series label, in order."""
    return {lbl: SERIES_STYLES[i % len(SERIES_STYLES)] for i, lbl in enumerate(labels)}


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG to ``path``."""
    fig.savefig(path, dpi=dpi)
    return path


def colors_of(labels: Sequence[str]) -> dict[str, Any]:
    """One color per series label, in order (tab10, or tab20 beyond 10 labels)."""
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lbl: cmap(i % cmap.N) for i, lbl in enumerate(labels)}


def panel_grid(n: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` panels, at most three a row."""
    ncols = min(3, max(1, n))
    return math.ceil(n / ncols), ncols


def _setting(view: SweepView, key: str, short: str, label: str) -> str:
    """``lr=0.1``; a partition label as it is (``Dir(0.5)``)."""
    return label if key in {f.key for f in partition_factors(view)} else f"{short}={label}"


def varying_panels(layout: Layout, combo: Sequence[str]) -> list[tuple[Any, str]]:
    """(factor, label) of a panel's factors that take more than one value in the sweep."""
    return [(f, label) for f, label in zip(layout.panels, combo) if len(f.labels) > 1]


def panel_key(layout: Layout, combo: Sequence[str]) -> str:
    """The labels that tell a panel from the others (``Dir(0.5), FedAvg``), for legend entries."""
    return ", ".join(label for _, label in varying_panels(layout, combo))


def fixed_settings(view: SweepView, layout: Layout) -> str:
    """The panel factors with one value in the whole sweep (``attack=sign-flip s=10``):
    said once above the panels, not in every panel's title."""
    return ", ".join(_setting(view, f.key, f.short, f.labels[0]) for f in layout.panels if len(f.labels) == 1)


def panel_title(view: SweepView, layout: Layout, combo: Sequence[str], runs: Sequence[RunInfo], width: int = 36) -> str:
    """What a panel's runs share: its settings that vary between panels (``lr=0.1``; a
    partition label as it is, ``Dir(0.5)``; the fixed ones are :func:`fixed_settings`),
    plus the strategy and the partition when all its runs have the same one and the lines
    do not already tell (``fedprox, Dir(0.5)``); wrapped at ``width`` characters, so that
    neighbouring panels' titles never run into each other."""
    partition_keys = {f.key for f in partition_factors(view)}
    parts = [_setting(view, f.key, f.short, label) for f, label in varying_panels(layout, combo)]
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
    return textwrap.fill(", ".join(parts) or combo_label(combo), width, break_long_words=False)


def integer_rounds(ax: Axes) -> None:
    """Round numbers on the x axis: integers only."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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


def comparison_series(view: SweepView) -> tuple[list[str], Any, str | None]:
    """(labels, run -> label, legend title) of the series of a figure whose x is the
    partition: every combination of the factors that vary and do not set the partition
    (the strategies of a strategies x partitions sweep; the defences of a defences x
    partitions one), or, without any, the strategies run."""
    pf = partition_factors(view)
    others = [f for f in view.factors if f not in pf and len(f.labels) > 1]
    if others:
        labels = [" / ".join(c) for c in itertools.product(*[f.labels for f in others])]
        return (
            labels,
            lambda r: " / ".join(r.factors.get(f.key, "?") for f in others),
            " / ".join(f.short for f in others),
        )
    return list(dict.fromkeys(r.strategy for r in view.runs)), lambda r: r.strategy, None


def partition_of(view: SweepView, r: RunInfo) -> str:
    """A run's partition setting: its partition factors' labels (``Dir(0.5)``), else its partition."""
    pf = partition_factors(view)
    return " / ".join(str(r.factors.get(f.key, "?")) for f in pf) if pf else r.partition


def accuracy_vs_heterogeneity_figure(view: SweepView, measure: str) -> Figure | None:
    """Final test accuracy of every run against a data-heterogeneity measure, one colour
    per series (:func:`comparison_series`: the strategies, say), one setting per partition.

    Small dots are runs (an x for a diverged run); a square with an error bar is a
    setting's mean ± sample std over seeds, at the mean of its runs' measure, and is
    not joined to the other settings' (different partitions are not points of one
    curve). The settings are named above the axes (with † when a diverged run is in
    the mean). For ``beta`` (a log axis) the IID runs, beta -> infinity, stand at the
    right edge past a dashed rule, under the tick ``IID``. Runs without a value
    (``#C=1`` has no beta) are named under the axes (:func:`off_axis_settings`).
    """
    done = [r for r in finished_runs(view) if r.value("test_accuracy") is not None]
    on_axis = [r for r in done if het_value(r, measure) is not None]
    if not on_axis:
        return None
    iid = [r for r in done if _on_iid_edge(r, measure)]
    placed = on_axis + iid
    xs = sorted({het_value(r, measure) for r in on_axis})
    x_iid = _iid_x(xs) if iid else None

    def x_of(r: RunInfo) -> float:
        return x_iid if _on_iid_edge(r, measure) else het_value(r, measure)

    labels, series_of, title = comparison_series(view)
    colors = colors_of(labels)
    series = [lbl for lbl in labels if any(series_of(r) == lbl for r in placed)]
    # whether two series share a setting (strategies on one partition), which then stand side by side
    settings_of = [{partition_of(view, r) for r in placed if series_of(r) == lbl} for lbl in series]
    shared = any(a & b for i, a in enumerate(settings_of) for b in settings_of[i + 1 :])
    off = off_axis_settings(view, measure)
    fig = new_figure(7.5, 4.6 + (0.3 if off else 0.0), constrained=True)
    ax = fig.subplots()
    handles = []
    settings: dict[str, list[float]] = {}  # a setting's name -> the x of its means (one per series)
    marked: set[str] = set()  # the settings whose mean includes a diverged run
    for lbl in series:
        members = [r for r in placed if series_of(r) == lbl]
        _scatter_runs(ax, members, x_of, colors[lbl])
        pts = _setting_means(view, members, x_of, settings, marked)
        means = _draw_means(ax, pts, colors[lbl], lbl)
        if shared:
            _side_by_side(fig, ax, means, len(handles), len(series))
        handles.append(means)
    if measure == "beta":
        _beta_axis(ax, xs, x_iid)
    _name_settings(ax, {n: f"{n} †" if n in marked else n for n in settings}, settings)
    ax.set_xlabel(MEASURE_AXIS.get(measure, measure))
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3)
    if handles:
        _points_legend(ax, handles, any(r.diverged for r in placed), title)
    if off:
        fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
        fig.text(0.01, 0.01, "not on this axis: " + "; ".join(off), fontsize=7, color="dimgray", ha="left", va="bottom")
    return fig


def _iid_x(xs: Sequence[float]) -> float:
    """Where IID stands on the beta axis: past the largest beta by half a decade, or a
    quarter of the betas' span."""
    lo, hi = math.log10(xs[0]), math.log10(xs[-1])
    return 10 ** (hi + max(0.5, 0.25 * (hi - lo)))


def _scatter_runs(ax: Axes, members: Sequence[RunInfo], x_of: Any, color: Any) -> None:
    """A series' runs as small dots, a diverged run as an x."""
    for group, marker, size in (
        ([r for r in members if not r.diverged], "o", 16),
        ([r for r in members if r.diverged], "x", 36),
    ):
        if group:
            ax.scatter(
                [x_of(r) for r in group],
                [100 * r.value("test_accuracy") for r in group],
                color=color,
                alpha=0.5,
                s=size,
                marker=marker,
                linewidths=1.2 if marker == "x" else 0,
                gid="diverged" if marker == "x" else None,
            )


def _setting_means(
    view: SweepView, members: Sequence[RunInfo], x_of: Any, settings: dict[str, list[float]], marked: set[str]
) -> list[tuple[float, float, float]]:
    """(x, accuracy %, its std) of each of a series' settings, sorted by x; each setting's x
    is added to ``settings`` and a setting with a diverged run to ``marked``."""
    pts = []
    for name in dict.fromkeys(partition_of(view, r) for r in members):
        group = [r for r in members if partition_of(view, r) == name]
        x, _, _ = mean_std(x_of(r) for r in group)
        y, sd, _ = mean_std(r.value("test_accuracy") for r in group)
        settings.setdefault(name, []).append(x)
        if any(r.diverged for r in group):
            marked.add(name)
        pts.append((x, 100 * y, 100 * sd if sd is not None else 0.0))
    pts.sort()
    return pts


def _draw_means(ax: Axes, pts: Sequence[tuple[float, float, float]], color: Any, label: str) -> Any:
    """A series' setting means: squares with error bars, not joined."""
    return ax.errorbar(
        [p[0] for p in pts],
        [p[1] for p in pts],
        yerr=[p[2] for p in pts],
        fmt="s",
        linestyle="none",
        color=color,
        ms=6,
        mec="black",
        mew=0.5,
        capsize=3,
        elinewidth=1,
        label=label,
    )


def _side_by_side(fig: Figure, ax: Axes, means: Any, i: int, n: int) -> None:
    """Move the ``i``-th of ``n`` series' squares a few points sideways where series share a
    setting (the same partition gives every strategy the same measure: one square would
    hide the others); the data stay at their measure, only the drawing moves."""
    shift = ScaledTranslation((i - (n - 1) / 2) * 6 / 72, 0, fig.dpi_scale_trans)
    for artist in [means.lines[0], *means.lines[1], *means.lines[2]]:
        artist.set_transform(ax.transData + shift)


def _beta_axis(ax: Axes, xs: Sequence[float], x_iid: float | None) -> None:
    """A log axis with a tick at each beta run, and IID past a dashed rule at the right edge."""
    ax.set_xscale("log")
    ticks, tick_names = list(xs), [f"{x:g}" for x in xs]
    if x_iid is not None:
        ax.axvline(math.sqrt(xs[-1] * x_iid), color="gray", linestyle="--", linewidth=0.8)
        ticks.append(x_iid)
        tick_names.append("IID")
    ax.set_xticks(ticks, tick_names)  # the settings' betas: log-axis minor ticks would label values nobody ran
    ax.xaxis.set_minor_locator(NullLocator())


def _name_settings(ax: Axes, names: dict[str, str], settings: dict[str, list[float]]) -> None:
    """The settings by name above the axes, at the mean of their means' x."""
    top = ax.secondary_xaxis("top")
    where = sorted((sum(v) / len(v), names[n]) for n, v in settings.items())
    top.set_xticks([w for w, _ in where], [n for _, n in where], fontsize=8, rotation=30 if len(where) > 4 else 0)
    top.xaxis.set_minor_locator(NullLocator())
    top.tick_params(length=3)


def _points_legend(ax: Axes, handles: list, any_diverged: bool, title: str | None) -> None:
    """The series, then what a dot, a square and an x are, right of the axes."""
    from matplotlib.lines import Line2D

    extra = [Line2D([], [], marker="o", color="gray", alpha=0.5, linestyle="none", ms=4)]
    extra_labels = ["a run"]
    extra.append(Line2D([], [], marker="s", color="gray", mec="black", mew=0.5, linestyle="none", ms=6))
    extra_labels.append("mean ± sample std over seeds")
    if any_diverged:
        extra.append(Line2D([], [], marker="x", color="gray", linestyle="none", ms=6, mew=1.2))
        extra_labels.append("a diverged run († its setting's mean includes it)")
    ax.legend(
        handles + extra,
        [h.get_label() for h in handles] + extra_labels,
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        title=title,
        title_fontsize=8,
    )


def drops_figure(drops: Sequence[DropRow], view: SweepView) -> Figure | None:
    """Bars: the drop against IID (percentage points) of every setting, one bar per series."""
    if not drops:
        return None
    layout, series, keys, by = drop_grid(drops, view)
    colors = colors_of(layout.series_labels(view))
    fig = new_figure(max(5.0, 1.2 * len(keys) * max(1, len(series)) / 2 + 2) + 1.5, 4)  # + 1.5 in for the legend
    ax = fig.subplots()
    width = 0.8 / max(1, len(series))
    marked = False
    for j, s in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(keys))]
        cells = [by.get((c, st, s)) for c, st in keys]
        bars = _drop_bars(ax, xs, cells, width, colors[s], s)
        marked = _mark_diverged_bars(ax, bars, cells) or marked
    if marked:
        ax.margins(y=0.12)  # room above the tallest error bar for its †
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([" / ".join(c + st) for c, st in keys], rotation=20, ha="right")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("accuracy drop vs IID (pp)")
    ax.grid(axis="y", alpha=0.3)
    if marked:
        fig.text(
            0.01,
            0.01,
            "† hatched: the mean includes a diverged run",
            fontsize=7,
            color="dimgray",
            ha="left",
            va="bottom",
        )
    # outside the axes, right of them: inside, the legend covers whichever bar is tallest in its corner;
    # plain swatches (a series' first bar may be hatched, which means a diverged run, not the series)
    ax.legend(
        handles=[Patch(facecolor=colors[s], label=s) for s in series],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        fontsize=8,
        title=layout.series.short if layout.series is not None else None,
        title_fontsize=8,
    )
    # counts the legend: the axes shrink to leave it room inside the figure (and the note below)
    fig.tight_layout(rect=(0, 0.04, 1, 1) if marked else (0, 0, 1, 1))
    return fig


def _drop_bars(
    ax: Axes, xs: Sequence[float], cells: Sequence[DropRow | None], width: float, color: Any, label: str
) -> Any:
    """One series' bars of drops in percentage points (0 where a setting has none), with
    error bars: the sample std over seeds of the paired drop (none under two seeds)."""
    ys = [100 * d.drop if d is not None else 0.0 for d in cells]
    err = [100 * d.std if d is not None and d.std is not None else 0.0 for d in cells]
    return ax.bar(
        xs,
        ys,
        width=width,
        color=color,
        label=label,
        yerr=err if any(err) else None,
        capsize=3,
        error_kw={"elinewidth": 1, "ecolor": "black"},
    )


def _mark_diverged_bars(ax: Axes, bars: Any, cells: Sequence[DropRow | None]) -> bool:
    """Hatch a bar whose mean has a diverged run in it and put † above its error bar;
    whether any was."""
    marked = False
    for bar, d in zip(bars, cells):
        if d is None or not d.diverged:
            continue
        marked = True
        bar.set_hatch("//")
        bar.set_edgecolor("black")
        top = bar.get_height() + (100 * d.std if d.std is not None else 0.0)
        ax.annotate(
            "†",
            (bar.get_x() + bar.get_width() / 2, top),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=10,
        )
    return marked


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
    n_boxes = 2 * len(layout.series_labels(view))  # at most: each algorithm, and its +FT
    # many boxes: one panel a row, stacked (side by side they made a strip 22 in wide and 4 high)
    ncols = 1 if len(layout.series_labels(view)) > 5 else panel_grid(len(combos))[1]
    nrows = math.ceil(len(combos) / ncols)
    fig = new_figure(min(10.0, max(5.0, 0.55 * n_boxes + 1.5)) * ncols, 3.6 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    drawn = False
    for i, combo in enumerate(combos):
        ax = axes[i // ncols][i % ncols]
        in_panel = [r for r in runs if layout.panel_of(r) == tuple(combo)]
        boxes: dict[str, list[float]] = {}
        marked: set[str] = set()  # boxes that pool a diverged run's parties
        for lbl in layout.series_labels(view):
            for r in (r for r in in_panel if layout.series_of(r) == lbl):
                accs = party_accuracies(r)
                own = accs.get("personal")
                name = lbl if own is not None else f"{lbl} (global)"
                boxes.setdefault(name, []).extend(100 * a for a in (own if own is not None else accs.get("local", [])))
                if accs.get("finetune"):
                    boxes.setdefault(f"{lbl}+FT", []).extend(100 * a for a in accs["finetune"])
                if r.diverged:
                    marked.update({name, f"{lbl}+FT"})
        boxes = {(f"{k} †" if k in marked else k): v for k, v in boxes.items() if v}
        if boxes:
            drawn = True
            ax.boxplot(list(boxes.values()), tick_labels=list(boxes), showmeans=True)
            ax.tick_params(axis="x", labelrotation=30, labelsize=9)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
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
