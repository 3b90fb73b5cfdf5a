"""The sweep report's curves over rounds: test accuracy and loss (:func:`curves_figure`)
and model heterogeneity (:func:`model_heterogeneity_figure`), one panel per setting and
one line per series, each line the mean over seeds with a ± std band.

A diverged run is never averaged in (its exploding values would drag the mean off the
chart and end it at the round the run stopped): it is its own thin line with an X at
the round it diverged (:func:`draw_curves`), and where its values would squeeze the
other runs' curves against one edge, the axis stays on those runs and a triangle marks
where the diverged one leaves it (:func:`keep_axis_on`). One legend serves every panel
(:func:`shared_legend`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedsim.report.figures import (
    colors_of,
    fixed_settings,
    integer_rounds,
    markers_of,
    new_figure,
    panel_grid,
    panel_key,
    panel_title,
    styles_of,
)
from fedsim.report.load import Layout, RunInfo, SweepView, finished_runs, read_config
from fedsim.rundir.plots import log_y_axis
from fedsim.sweeps import mean_std

HETEROGENEITY_SERIES = (
    ("client_drift_mean", "client drift (mean)"),
    ("update_cosine_mean", "update cosine (mean)"),
    ("gradient_diversity", "gradient diversity"),
)


def shared_legend(fig: Figure, axes: Sequence[Axes], title: str | None = None) -> None:
    """One legend for every panel, right of them (per-panel copies cover data), with the
    divergence marks explained when a panel shows one."""
    from matplotlib.lines import Line2D

    handles, labels = [], []
    for ax in axes:
        for h, lbl in zip(*ax.get_legend_handles_labels()):
            if lbl not in labels:
                handles.append(h)
                labels.append(lbl)
    if not handles:
        return
    marks = {m for ax in axes for ln in ax.get_lines() for m in [ln.get_marker()] if ln.get_gid() == "diverged"}
    if "X" in marks:
        handles.append(Line2D([], [], color="gray", **DIVERGED_MARK))
        labels.append("the round a run diverged")
    if "^" in marks or "v" in marks:
        handles.append(Line2D([], [], color="gray", marker="^", linestyle="none", ms=7))
        labels.append("a diverged run leaves the axis")
    # a column holds what the figure's height fits (about 0.19 in an entry at 8 pt): a
    # legend taller than the figure is cut at its edges (29 settings of mnist-defaults)
    rows = max(1, int((fig.get_figheight() - 0.4) / 0.19) - (1 if title else 0))
    ncol = -(-len(handles) // rows)
    if ncol > 1:
        fig.set_figwidth(fig.get_figwidth() + 1.6 * (ncol - 1))
    fig.legend(handles, labels, loc="outside right center", fontsize=8, title=title, title_fontsize=8, ncol=ncol)


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


def run_curve(r: RunInfo, key: str) -> tuple[list[int], list[float]]:
    """One run's finite values of ``key`` by round."""
    xs, ys = [], []
    for row in r.history:
        v = row.get(key)
        if v is not None and math.isfinite(float(v)):
            xs.append(int(row["round"]))
            ys.append(float(v))
    return xs, ys


#: how a diverged run is drawn: its own thin line, an X at the round it diverged, a
#: triangle on the axis' edge where it leaves an axis kept on the runs that did not diverge
DIVERGED_MARK = {"marker": "X", "ms": 8, "mec": "black", "mew": 0.6, "linestyle": "none", "zorder": 5}


@dataclass
class DivergedCurve:
    """A diverged run's curve as drawn in a panel."""

    run: RunInfo
    xs: list[int]
    ys: list[float]
    color: Any
    #: the index of the point marked X (the round it diverged), and the X itself
    at: int = -1
    mark: Any = None


def draw_curves(
    ax: Axes,
    members: Sequence[RunInfo],
    key: str,
    style: str,
    color: Any,
    label: str,
    scale: float = 1.0,
    band: bool = True,
    label_diverged: bool = True,
    marker: str = "o",
    where: str = "",
) -> tuple[list[float], list[DivergedCurve]]:
    """One line of a panel: the mean over the runs that did not diverge (± std band), and
    each diverged run as its own thin line with an X at the round it diverged (its last,
    or with ``on_divergence: continue`` a marked one); a diverged run is never averaged
    in, where its exploding values would drag the mean off the chart and end it early.

    ``marker`` tells the series apart (every few rounds on long runs); ``where`` (the
    panel) goes into a diverged run's legend entry, which a shared legend lists.
    Returns the y values drawn for the runs that did not diverge (the axis' range) and
    the diverged runs' curves (kept from stretching it by :func:`keep_axis_on`)."""
    ok = [r for r in members if not r.diverged]
    shown: list[float] = []
    xs, ms, sds = aggregate_curves(ok, key)
    if xs:
        ys = [m * scale for m in ms]
        ax.plot(xs, ys, style, color=color, label=label, marker=marker, ms=4, markevery=max(1, len(xs) // 12))
        shown += ys
        if band and any(sds):
            lo = [(m - s) * scale for m, s in zip(ms, sds)]
            hi = [(m + s) * scale for m, s in zip(ms, sds)]
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
            shown += lo + hi
    curves = []
    for r in (r for r in members if r.diverged):
        rx, ry = run_curve(r, key)
        if not rx:
            continue
        ry = [y * scale for y in ry]
        # the legend names each diverged run once (on the panel's first key); without a
        # run that did not diverge, its line is the series' only one and carries its name
        name = (
            f"{label}, {where + ', ' if where else ''}seed {r.seed}: diverged in round {r.diverged_round}"
            if label_diverged or not xs
            else None
        )
        ax.plot(rx, ry, style, color=color, linewidth=0.9, alpha=0.75, label=name)
        at = r.diverged_round
        i = max((j for j, x in enumerate(rx) if at is None or x <= at), default=len(rx) - 1)
        (mark,) = ax.plot([rx[i]], [ry[i]], color=color, gid="diverged", **DIVERGED_MARK)
        curves.append(DivergedCurve(r, rx, ry, color, i, mark))
    return shown, curves


#: the share of the y axis the runs that did not diverge keep at least: a diverged run
#: that would squeeze them into less is cut off at the axis' edge
MIN_SHARE = 0.5


def keep_axis_on(ax: Axes, shown: Sequence[float], diverged: Sequence[DivergedCurve]) -> list[str]:
    """Keep the y axis on the values of the runs that did not diverge (``shown``) when
    the diverged runs' values would squeeze them into less than :data:`MIN_SHARE` of it
    (a loss of 1e28 flattens every other curve against the floor; on a log axis the
    share counts decades); a triangle on the edge marks where each such curve leaves
    the axis. Returns the names of the runs that leave it (none when nothing is cut)."""
    log = ax.get_yscale() == "log"

    def t(v: float) -> float:
        return math.log10(v) if log else v

    def usable(v: float) -> bool:
        return math.isfinite(v) and (v > 0 or not log)

    vals = [v for v in shown if usable(v)]
    others = [y for c in diverged for y in c.ys if usable(y)]
    if not vals or not others:
        return []
    lo, hi = min(vals), max(vals)
    span = t(hi) - t(lo)
    full = max(t(hi), max(map(t, others))) - min(t(lo), min(map(t, others)))
    if full <= 0 or span / full >= MIN_SHARE:
        return []
    if log:  # a margin of 8% of the decades shown, at least 10% either way
        pad = 10 ** max(0.08 * span, 0.04)
        lo, hi = lo / pad, hi * pad
    else:
        pad = 0.08 * span or 0.05 * abs(hi) or 1.0
        lo, hi = lo - pad, hi + pad
    cut: list[str] = []
    for c in diverged:
        out = [(x, y) for x, y in zip(c.xs, c.ys) if y > hi or y < lo]
        if not out:
            continue
        if c.run.name not in cut:
            cut.append(c.run.name)
        x, y = out[0]
        ax.plot(
            [x],
            [hi if y > hi else lo],
            "^" if y > hi else "v",
            color=c.color,
            ms=7,
            clip_on=False,
            zorder=6,
            gid="diverged",
        )
        ym = c.ys[c.at]
        if c.mark is not None and (ym > hi or ym < lo):  # its X is off the axis too: moved onto the edge
            c.mark.set_ydata([hi if ym > hi else lo])
            c.mark.set_clip_on(False)
    if cut:
        ax.set_ylim(lo, hi)
    return cut


def round_axis(runs: Sequence[RunInfo]) -> str:
    """The x label of a per-round panel. An asynchronous run's rounds are its server steps
    (K arrivals each, not a cohort's round: README "Asynchronous training"), so a panel
    holding one says so; its simulated-time figure is the like-for-like comparison."""
    asynchronous = any((read_config(r.path).get("asynchronous") or {}).get("mode", "off") != "off" for r in runs)
    return "round (asynchronous runs: server step)" if asynchronous else "round"


def _cut_note(title: str, cut: int) -> str:
    """A panel title with the count of diverged runs that leave its y axis."""
    if not cut:
        return title
    return f"{title}\n{cut} diverged run{'s' if cut > 1 else ''} off the axis (▲ where it leaves)"


def curves_figure(
    view: SweepView,
    layout: Layout,
    keys: Sequence[tuple[str, str, str]],
    ylabel: str,
    yscale: str = "linear",
    cut: list[str] | None = None,
) -> Figure | None:
    """One panel per setting, one line per series (mean over seeds, ± std band).

    ``keys``: (metrics key, line style, legend suffix); accuracies are drawn in %.
    ``yscale="log"`` for losses (a band reaching below zero runs off the axis). A
    diverged run is not in the mean: it is its own thin line with an X at the round it
    diverged, and the y axis stays on the runs that did not diverge (:func:`draw_curves`,
    :func:`keep_axis_on`); the names of the runs that leave it are appended to ``cut``.
    """
    runs = finished_runs(view)
    combos = layout.panel_combos() or [()]
    look = _Look.of(layout.series_labels(view))
    nrows, ncols = panel_grid(len(combos))
    fig = new_figure(4.6 * ncols + 2.0, 3.4 * nrows, constrained=True)  # + 2 in for the shared legend
    axes = fig.subplots(nrows, ncols, squeeze=False)
    drawn = False
    for i, combo in enumerate(combos):
        ax = axes[i // ncols][i % ncols]
        if yscale == "log":
            log_y_axis(ax)
        else:
            ax.grid(alpha=0.3)
        in_panel = [r for r in runs if layout.panel_of(r) == tuple(combo)]
        title = panel_title(view, layout, combo, in_panel)
        drawn_here, shown, diverged = _panel_lines(ax, layout, combo, in_panel, look, keys)
        drawn = drawn or drawn_here
        # accuracies are bounded (0-100%): a diverged run's fall to chance is worth seeing whole
        off = [] if all("accuracy" in k for k, _, _ in keys) else _keep_axis(ax, shown, diverged, cut)
        ax.set_title(_cut_note(title, len(off)))
        ax.set_xlabel(round_axis(in_panel))
        integer_rounds(ax)
        ax.set_ylabel(ylabel)
    for j in range(len(combos), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    if not drawn:
        return None
    _legend_and_suptitle(fig, axes, view, layout)
    return fig


@dataclass
class _Look:
    """How each series is drawn in every panel: its colour, marker and line style."""

    labels: list[str]
    colors: dict[str, Any]
    markers: dict[str, str]
    styles: dict[str, str]

    @classmethod
    def of(cls, labels: list[str]) -> _Look:
        """The look of these series, in order."""
        return cls(labels, colors_of(labels), markers_of(labels), styles_of(labels))


def _panel_lines(
    ax: Axes,
    layout: Layout,
    combo: Sequence[str],
    in_panel: Sequence[RunInfo],
    look: _Look,
    keys: Sequence[tuple[str, str, str]],
) -> tuple[bool, list[float], list[DivergedCurve]]:
    """Every series' line of each key in one panel (:func:`draw_curves`): whether any was
    drawn, the y values of the runs that did not diverge, and the diverged runs' curves."""
    drawn = False
    shown: list[float] = []
    diverged: list[DivergedCurve] = []
    for lbl in look.labels:
        members = [r for r in in_panel if layout.series_of(r) == lbl]
        for key, style, suffix in keys:
            # one band per line keeps the panel readable; one legend entry per diverged run
            first = key == keys[0][0]
            vals, curves = draw_curves(
                ax,
                members,
                key,
                look.styles[lbl] if len(keys) == 1 else style,  # the style tells series apart unless it tells keys
                look.colors[lbl],
                f"{lbl}{suffix}",
                100 if "accuracy" in key else 1,
                band=first,
                label_diverged=first,
                marker=look.markers[lbl],
                where=panel_key(layout, combo),
            )
            drawn = drawn or bool(vals or curves)
            shown += vals
            diverged += curves
    return drawn, shown, diverged


def _keep_axis(ax: Axes, shown: Sequence[float], diverged: Sequence[DivergedCurve], cut: list[str] | None) -> list[str]:
    """:func:`keep_axis_on`, with the names of the runs that leave the axis added to ``cut``."""
    off = keep_axis_on(ax, shown, diverged)
    if cut is not None:
        cut.extend(n for n in off if n not in cut)
    return off


def _legend_and_suptitle(fig: Figure, axes: Any, view: SweepView, layout: Layout) -> None:
    """One legend for every panel, and above them what every panel shares, said once."""
    shared_legend(fig, [ax for row in axes for ax in row], layout.series.short if layout.series is not None else None)
    if fixed_settings(view, layout):
        fig.suptitle(fixed_settings(view, layout), fontsize=10)


def model_heterogeneity_figure(view: SweepView, layout: Layout, cut: list[str] | None = None) -> Figure | None:
    """Rows: client drift, update cosine, gradient diversity; columns: settings; lines:
    series (mean over the seeds that did not diverge, ± std band; a diverged run drawn
    apart and kept from stretching the axis, as in :func:`curves_figure`: the runs that
    leave it are appended to ``cut``)."""
    runs = finished_runs(view)
    combos = layout.panel_combos() or [()]
    look = _Look.of(layout.series_labels(view))
    ncols = len(combos)
    fig = new_figure(3.8 * ncols + 2.0, 2.6 * len(HETEROGENEITY_SERIES) + 0.3, constrained=True)
    axes = fig.subplots(len(HETEROGENEITY_SERIES), ncols, squeeze=False, sharex="col")
    drawn = False
    for j, combo in enumerate(combos):
        in_panel = [r for r in runs if layout.panel_of(r) == tuple(combo)]
        title = panel_title(view, layout, combo, in_panel)
        for i, (key, name) in enumerate(HETEROGENEITY_SERIES):
            ax = axes[i][j]
            ax.grid(alpha=0.3)
            # one key a panel: the series' own line styles, a band and a legend entry each
            drawn_here, shown, diverged = _panel_lines(ax, layout, combo, in_panel, look, [(key, "-", "")])
            drawn = drawn or drawn_here
            off = _keep_axis(ax, shown, diverged, cut)
            if i == 0:
                ax.set_title(_cut_note(title, len(off)))
            elif off:
                ax.set_title(_cut_note("", len(off)).strip(), fontsize=8)
            if j == 0:
                ax.set_ylabel(name)
            if i == len(HETEROGENEITY_SERIES) - 1:
                ax.set_xlabel(round_axis(in_panel))
            integer_rounds(ax)
    if not drawn:
        return None
    fig.align_ylabels(axes[:, 0])
    _legend_and_suptitle(fig, axes, view, layout)
    return fig
