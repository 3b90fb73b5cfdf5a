"""Privacy against utility: the table and the figure of a sweep over ``privacy.*``.

Each setting (partition, strategy, privacy mode, noise multiplier) is one point: the
final test accuracy (mean over seeds) against the epsilon spent at the end of the run
(summary.json's ``epsilon`` at ``delta``, mean over seeds). Runs without DP
(``privacy.mode: none``) are the reference: epsilon is infinite, drawn as a dashed line.
"""

from __future__ import annotations

import math
from collections import defaultdict

from matplotlib.figure import Figure

from fedsim.report.figures import colors_of, new_figure
from fedsim.report.load import RunInfo, SweepView, finished_runs, partition_factors
from fedsim.rundir.plots import plain_log_scale
from fedsim.sweeps import mean_std
from fedsim.util.formatting import diverged_mark, format_mean_std


def _key(r: RunInfo) -> tuple[str, str, str, float | None]:
    mode = r.value("privacy_mode") or "none"
    sigma = r.value("noise_multiplier") if mode != "none" else None
    return r.partition, r.strategy, mode, sigma


def has_privacy(view: SweepView) -> bool:
    return any(r.value("privacy_mode") for r in finished_runs(view))


def _partition_order(view: SweepView, parts: set[str]) -> list[str]:
    """The partitions in the sweep's order (IID first as in its tables), the rest sorted."""
    order = [lbl for f in partition_factors(view) for lbl in f.labels]
    return sorted(parts, key=lambda p: (order.index(p) if p in order else len(order), p))


def privacy_points(view: SweepView) -> list[dict]:
    """One row per setting: partition, strategy, mode, sigma, epsilon, delta, accuracy (%), seeds."""
    groups: dict[tuple, list[RunInfo]] = defaultdict(list)
    for r in finished_runs(view):
        groups[_key(r)].append(r)
    rows = []
    for (part, strat, mode, sigma), runs in groups.items():
        acc, acc_sd, n = mean_std(r.value("test_accuracy") for r in runs)
        eps, _, _ = mean_std(r.value("epsilon") for r in runs)
        rows.append(
            {
                "partition": part,
                "strategy": strat,
                "mode": mode,
                "sigma": sigma,
                "epsilon": eps if mode != "none" else math.inf,
                "delta": runs[0].value("delta"),
                "accuracy": None if acc is None else 100 * acc,
                "accuracy_std": None if acc_sd is None else 100 * acc_sd,
                "seeds": n,
                "diverged": sum(r.diverged for r in runs),
            }
        )
    order = {"none": 0}
    parts = _partition_order(view, {r["partition"] for r in rows})
    return sorted(
        rows,
        key=lambda r: (
            parts.index(r["partition"]),
            r["strategy"],
            order.get(r["mode"], 1),
            r["mode"],
            -(r["sigma"] or 0),
        ),
    )


def privacy_table(view: SweepView) -> str:
    """Markdown: every setting's accuracy and epsilon (delta), the no-DP reference first; a
    mean that includes a diverged run is marked †."""
    lines = [
        "| partition | strategy | privacy | noise multiplier | epsilon (delta) | test accuracy (%) |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for p in privacy_points(view):
        eps = "∞ (no DP)" if p["mode"] == "none" else ("∞" if p["epsilon"] is None else f"{p['epsilon']:.2f}")
        if p["mode"] != "none" and p["delta"] is not None:
            eps += f" ({p['delta']:.1e})"
        # the points are in percent already
        acc = format_mean_std(p["accuracy"], p["accuracy_std"], percent=False, digits=2)
        if p["accuracy"] is not None:
            acc += diverged_mark(p["diverged"])
        sigma = "–" if p["sigma"] is None else f"{p['sigma']:g}"
        lines.append(f"| {p['partition']} | {p['strategy']} | {p['mode']} | {sigma} | {eps} | {acc} |")
    return "\n".join(lines)


def privacy_figure(view: SweepView) -> Figure | None:
    """Accuracy against epsilon (log axis), one panel per partition, one line per
    strategy and privacy mode through its noise levels, each point labelled with its
    noise multiplier; no DP as a dashed line. Constrained layout: every label inside."""
    points = [p for p in privacy_points(view) if p["accuracy"] is not None]
    if not any(p["mode"] != "none" and p["epsilon"] is not None and math.isfinite(p["epsilon"]) for p in points):
        return None
    parts = _partition_order(view, {p["partition"] for p in points})
    fig = new_figure(4.6 * len(parts) + 2.4, 4.2, constrained=True)
    axes = fig.subplots(1, len(parts), squeeze=False)[0]
    series = sorted({(p["strategy"], p["mode"]) for p in points if p["mode"] != "none"})
    refs = sorted({p["strategy"] for p in points if p["mode"] == "none"})
    colors = colors_of([f"{s}, {m}" for s, m in series] + [f"{s}, none" for s in refs])
    for ax, part in zip(axes, parts):
        for j, (strat, mode) in enumerate(series):
            mine = sorted(
                (p["epsilon"], p["accuracy"], p["sigma"], p["diverged"])
                for p in points
                if (p["partition"], p["strategy"], p["mode"]) == (part, strat, mode)
                and p["epsilon"] is not None
                and math.isfinite(p["epsilon"])
            )
            if mine:
                color = colors[f"{strat}, {mode}"]
                ax.plot([m[0] for m in mine], [m[1] for m in mine], "o-", color=color, label=f"{strat}, {mode}")
                for eps, acc, sigma, _ in mine:  # which noise gave which point
                    if sigma is not None:  # above the point, or below for every other series (they meet)
                        ax.annotate(
                            f"σ={sigma:g}",
                            (eps, acc),
                            xytext=(4, 4 if j % 2 == 0 else -12),
                            textcoords="offset points",
                            fontsize=8,
                            color=color,
                        )
            marked = [(m[0], m[1]) for m in mine if m[3]]
            if marked:  # a mean with a diverged run in it: an X over its point
                ax.plot(*zip(*marked), "X", color="black", ms=8, linestyle="none", label="† includes a diverged run")
        for strat in refs:
            ref = [p["accuracy"] for p in points if (p["partition"], p["strategy"], p["mode"]) == (part, strat, "none")]
            if ref:
                ax.axhline(ref[0], ls="--", color=colors[f"{strat}, none"], label=f"{strat}, no DP")
        plain_log_scale(ax, "x")
        ax.set_xlabel("epsilon spent (log scale)")
        ax.set_title(part)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("final test accuracy (%)")
    handles, labels = [], []
    for ax in axes:  # every panel's entries once (a diverged mark may be in any panel)
        for h, lbl in zip(*ax.get_legend_handles_labels()):
            if lbl not in labels:
                handles.append(h)
                labels.append(lbl)
    # the legend right of the panels, where it covers no point
    fig.legend(handles, labels, loc="outside right center", frameon=False, fontsize=9)
    fig.suptitle("Privacy against utility")
    return fig
