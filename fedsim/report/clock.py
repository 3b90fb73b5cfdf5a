"""The sweep report's accuracy against simulated time (``system.*``): beside accuracy
over rounds, the comparison FedScale makes (time-to-accuracy, Lai et al. 2022).

One panel per setting, one colour per series, one thin line per run: the seeds' rounds
end at different simulated times, so their curves are drawn, not averaged.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from fedsim.report.curves import shared_legend
from fedsim.report.figures import colors_of, new_figure, panel_grid, panel_title
from fedsim.report.load import Layout, RunInfo, SweepView, finished_runs


def time_curve(r: RunInfo) -> tuple[list[float], list[float]]:
    """One run's (simulated hours at the round's end, test accuracy in %) where evaluated."""
    pts = [
        (row["sim_end_s"] / 3600.0, 100.0 * row["test_accuracy"])
        for row in r.history
        if row.get("sim_end_s") is not None and row.get("test_accuracy") is not None
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def accuracy_vs_time_figure(view: SweepView, layout: Layout) -> Figure | None:
    """Test accuracy against simulated hours; None when no run has a clock."""
    runs = [r for r in finished_runs(view) if time_curve(r)[0]]
    if not runs:
        return None
    labels = layout.series_labels(view)
    colors = colors_of(labels)
    combos = layout.panel_combos() or [()]
    nrows, ncols = panel_grid(len(combos))
    fig = new_figure(4.6 * ncols + 2.0, 3.4 * nrows, constrained=True)
    # one time axis for every panel: a deadline's shorter rounds show as a shorter curve
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    for i, combo in enumerate(combos):
        ax = axes[i // ncols][i % ncols]
        ax.grid(alpha=0.3)
        in_panel = [r for r in runs if layout.panel_of(r) == tuple(combo)]
        for lbl in labels:
            for j, r in enumerate(m for m in in_panel if layout.series_of(m) == lbl):
                xs, ys = time_curve(r)
                ax.plot(xs, ys, color=colors[lbl], lw=1.2, alpha=0.8, label=lbl if j == 0 else None)
        ax.set_title(panel_title(view, layout, combo, in_panel))
        ax.set_xlabel("simulated hours")
        ax.set_ylabel("test accuracy (%)")
    for j in range(len(combos), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    shared_legend(fig, [ax for row in axes for ax in row], layout.series.short if layout.series else None)
    return fig


def time_lines(summary: dict) -> list[str]:
    """A run report's section on its simulated time: total, time to each target accuracy
    and who the aggregate saw (``summary.json``); nothing for a run without them."""
    if "sim_time_s" not in summary and "time_to_accuracy" not in summary:
        return []
    md = ["## Simulated time", "", "| measure | value |", "| --- | ---: |"]
    if "sim_time_s" in summary:
        md.append(f"| simulated time (s) | {summary['sim_time_s']:.1f} |")
    for target, hit in (summary.get("time_to_accuracy") or {}).items():
        if hit is None:
            md.append(f"| test accuracy {target}: never reached | – |")
            continue
        when = f"round {hit['round']}" + (f", {hit['sim_time_s']:.1f} s" if hit.get("sim_time_s") is not None else "")
        if hit.get("client_updates") is not None:
            when += f", {hit['client_updates']} client updates"
        md.append(f"| test accuracy {target} first reached | {when} |")
    part = summary.get("participation") or {}
    for status, n in (part.get("replies") or {}).items():
        md.append(f"| replies {status} | {n} |")
    for key in ("slow_quartile_share", "parties_never_aggregated", "class_tv_seen"):
        if part.get(key) is not None:
            md.append(f"| {key} | {part[key]:.4g} |")
    return md + [""]


def run_time_figure(history: list[dict]) -> Figure | None:
    """One run's test accuracy against simulated hours; None without a clock."""
    pts = [
        (row["sim_end_s"] / 3600.0, 100.0 * row["test_accuracy"])
        for row in history
        if row.get("sim_end_s") is not None and row.get("test_accuracy") is not None
    ]
    if not pts:
        return None
    fig = new_figure(5.0, 3.4, constrained=True)
    ax = fig.subplots()
    ax.grid(alpha=0.3)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3)
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("test accuracy (%)")
    return fig
