"""Accuracy against the bytes sent: the figure of a sweep's communication.

One line per setting (a combination of the sweep's factors): the test accuracy at each
evaluated round (mean over the seeds that did not diverge) against the MB sent up and
down by the end of that round (``bytes_up_total`` + ``bytes_down_total`` of
``metrics.jsonl``, or the cumulative sum of ``bytes_up`` + ``bytes_down`` in the rows of
runs from before those keys, mean over the same seeds), on a log axis: a compressor moves a line
to the left.
"""

from __future__ import annotations

from collections import defaultdict

from matplotlib.figure import Figure

from fedsim.report.figures import colors_of, new_figure
from fedsim.report.load import RunInfo, SweepView, finished_runs
from fedsim.rundir.plots import plain_log_scale
from fedsim.sweeps import mean_std

MB = 1e6


def accuracy_by_mb(run: RunInfo) -> dict[int, tuple[float, float]]:
    """round -> (MB sent up and down by the end of it, test accuracy in %) of the evaluated rounds."""
    out, total = {}, 0
    for row in run.history:
        total += int(row.get("bytes_up") or 0) + int(row.get("bytes_down") or 0)
        if row.get("bytes_up_total") is not None and row.get("bytes_down_total") is not None:
            total = int(row["bytes_up_total"]) + int(row["bytes_down_total"])
        if row.get("test_accuracy") is not None:
            out[int(row["round"])] = (total / MB, 100 * float(row["test_accuracy"]))
    return out


def comm_lines(view: SweepView) -> dict[str, list[tuple[float, float]]]:
    """Setting label -> its points (MB, accuracy %), means over its seeds round by round."""
    groups: dict[str, list[RunInfo]] = defaultdict(list)
    for r in finished_runs(view):
        if not r.diverged:
            groups[" / ".join(str(r.factors.get(f.key)) for f in view.factors) or "all"].append(r)
    lines = {}
    for label, runs in groups.items():
        curves = [accuracy_by_mb(r) for r in runs]
        rounds = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        points = []
        for rnd in rounds:
            mb = mean_std(c[rnd][0] for c in curves)[0]
            acc = mean_std(c[rnd][1] for c in curves)[0]
            if mb is not None and acc is not None and mb > 0:
                points.append((mb, acc))
        if points:
            lines[label] = points
    return lines


def comm_figure(view: SweepView) -> Figure | None:
    """Test accuracy against the cumulative MB sent, one line per setting (module docstring)."""
    lines = comm_lines(view)
    if not lines:
        return None
    fig = new_figure(7.5, 4.5, constrained=True)
    ax = fig.subplots()
    colors = colors_of(list(lines))
    for label, points in lines.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", ms=3, color=colors[label], label=label)
    plain_log_scale(ax, "x")
    ax.set_xlabel("MB sent, up + down, cumulative (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    fig.legend(loc="outside right center", frameon=False, fontsize=8)
    fig.suptitle("Accuracy against communication")
    return fig
