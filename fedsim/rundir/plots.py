"""Plots of one run: accuracy and loss curves, model heterogeneity over rounds (Agg, PNG).

:func:`run_figures` builds the figures from a run's metrics rows (so that a test can
read what is drawn); :func:`plot_run` writes them into the run's ``plots/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from fedsim.rundir.store import RunStore, read_jsonl

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: file name -> (y label, y scale, [(metrics key, legend label)]); loss on a log axis,
#: where a diverging run is a rising line and not one spike that flattens every other round
RUN_PANELS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "accuracy.png": (
        "accuracy",
        "linear",
        [
            # with eval.local_test the parties' own test data (pooled) first: a personalised
            # run's own models are what it is for, its global model often far below them
            ("personal_accuracy_wmean", "own models (parties' test data)"),
            ("finetune_accuracy_wmean", "global model fine-tuned (parties' test data)"),
            ("local_accuracy_wmean", "global model (parties' test data)"),
            ("test_accuracy", "test (global model)"),
            ("train_accuracy", "train (global model)"),
            ("val_accuracy", "local validation"),
            ("attack_success_rate", "attack success rate"),
        ],
    ),
    "loss.png": ("loss (log scale)", "log", [("test_loss", "test"), ("train_loss", "local training")]),
    "heterogeneity.png": (
        "model heterogeneity",
        "linear",
        [
            ("client_drift_mean", "client drift (mean)"),
            ("update_cosine_mean", "update cosine (mean)"),
            ("gradient_diversity", "gradient diversity"),
        ],
    ),
}


def partition_label(part: dict) -> str:
    """NIID-Bench style label of a partition: iid, Dir(0.5), #C=2, ..."""
    scheme = part.get("scheme") or "?"
    if scheme == "dirichlet":
        return f"Dir({part.get('beta'):g})" if part.get("beta") is not None else "Dir"
    if scheme == "label-quantity":
        return f"#C={part.get('classes_per_party')}"
    if scheme == "quantity-skew":
        return f"qty-Dir({part.get('beta'):g})" if part.get("beta") is not None else "quantity-skew"
    if scheme == "shards":
        return f"shards({part.get('shards_per_party')})"
    return str(scheme)


def run_title(config_path: Path) -> str:
    """A run's strategy and partition, as a plot title: ``fedprox, Dir(0.5)`` (empty when
    the config cannot be read: the curves are still worth drawing)."""
    try:
        cfg = yaml.safe_load(Path(config_path).read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return ""
    if not isinstance(cfg, dict):
        return ""
    strategy = (cfg.get("strategy") or {}).get("name") or "fedavg"
    return f"{strategy}, {partition_label(cfg.get('partition') or {})}"


def plain_log_scale(ax: Axes, which: str = "y") -> None:
    """A log ``which`` axis (``"x"`` or ``"y"``) whose tick labels are plain numbers (0.3,
    1.5, 1000, 1e+06).

    matplotlib's own labels read ``1.5 x 10^0`` on an axis spanning less than a decade,
    the usual case for a loss that did not diverge; which ticks get a label is still
    matplotlib's choice (:class:`~matplotlib.ticker.LogFormatter`).
    """
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(minor_thresholds=(2, 0.5)))


def log_y_axis(ax: Axes) -> None:
    """A log y axis with plain tick labels (:func:`plain_log_scale`) and a grid at every tick."""
    plain_log_scale(ax, "y")
    ax.grid(alpha=0.3, which="both")


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if v is not None and not r.get("aborted"):
            xs.append(r["round"])
            ys.append(v)
    return xs, ys


def diverged_round(rows: list[dict]) -> int | None:
    """The first round a run's records mark as diverged (README "Reliability"), or None."""
    return next((int(r["round"]) for r in rows if r.get("diverged")), None)


def run_figures(rows: list[dict], title: str = "") -> dict[str, Figure]:
    """The figures of :data:`RUN_PANELS` that have data, by file name, each titled ``title``."""
    # matplotlib only when plotting: a run with output.plots=false never loads it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    out: dict[str, Figure] = {}
    for fname, (ylabel, yscale, series) in RUN_PANELS.items():
        fig = Figure(figsize=(7.5, 4))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        drawn = False
        for key, label in series:
            xs, ys = _series(rows, key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=label)
                drawn = True
        if drawn:
            at = diverged_round(rows)
            if at is not None:  # where the numbers stop meaning training: marked, not hidden
                ax.axvline(at, color="crimson", linestyle=":", linewidth=1.2, label=f"diverged (round {at})")
            ax.set_title(title)
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(ylabel)
            if yscale == "log":
                log_y_axis(ax)
            else:
                ax.grid(alpha=0.3)
            # right of the axes: inside, the legend covers whichever curve runs through its corner
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
            fig.tight_layout()
            out[fname] = fig
    return out


def plot_run(store: RunStore) -> list[Path]:
    """Write the run's figures into ``plots/``; the paths written (none before round 1)."""
    rows = read_jsonl(store.metrics)
    if not rows:
        return []
    store.plots.mkdir(parents=True, exist_ok=True)
    out = []
    for fname, fig in run_figures(rows, run_title(store.config)).items():
        path = store.plots / fname
        fig.savefig(path, dpi=110)
        out.append(path)
    return out
