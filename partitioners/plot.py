"""Plot of a partition's label distribution per party."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # matplotlib loads when a plot is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# above this many parties, stacked bars become unreadable: draw a heatmap instead
_MAX_BAR_PARTIES = 50
_MAX_LEGEND_CLASSES = 20
# above this many parties, each heatmap row is the mean of a block of consecutive
# parties: a figure has ~1,400 pixel rows, and a million parties' matrix drawn as is
# took 3.4 s and ~800 MB (benchmarks/scale.py's size)
_MAX_HEATMAP_ROWS = 10_000


def plot_label_distribution(class_counts: Any, path: str | os.PathLike, title: str | None = None) -> None:
    """Write a PNG of the per-party class counts to ``path``.

    Up to 50 parties: one horizontal bar per party, stacked by class (one color per
    class; a legend up to 20 classes, a class colorbar beyond). More parties: a heatmap
    of parties x classes of each party's class proportions, with a colorbar. matplotlib
    is imported here and drawn on an Agg canvas (no pyplot state, no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 2 or counts.size == 0:
        raise ValueError(f"class_counts must be a non-empty parties x classes matrix; got shape {counts.shape}")
    n, k = counts.shape
    bars = n <= _MAX_BAR_PARTIES
    height = max(3.0, 0.32 * n + 1.5) if bars else min(14.0, max(7.0, n / 85))
    fig = Figure(figsize=(9, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    (_stacked_bars if bars else _heatmap)(fig, ax, counts)
    ax.set_title(title if title is not None else f"label distribution: {n} parties, {k} classes")
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png")
    fig.clear()  # the Agg figure is not registered with pyplot: clearing it frees it


def _stacked_bars(fig: Figure, ax: Axes, counts: np.ndarray) -> None:
    """A horizontal bar per party stacked by class: a legend up to 20 classes, a class colorbar beyond."""
    import matplotlib
    from matplotlib import cm, colors

    n, k = counts.shape
    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20" if k <= 20 else "viridis"]
    palette = [cmap(c % cmap.N) if k <= 20 else cmap(c / max(k - 1, 1)) for c in range(k)]
    left = np.zeros(n)
    ys = np.arange(n)
    for c in range(k):
        ax.barh(ys, counts[:, c], left=left, color=palette[c], height=0.8, label=str(c), linewidth=0)
        left += counts[:, c]
    ax.set_yticks(ys)
    ax.set_yticklabels([str(i) for i in range(n)], fontsize=8 if n > 20 else 10)
    ax.invert_yaxis()
    ax.set_ylabel("party")
    ax.set_xlabel("samples")
    if k <= _MAX_LEGEND_CLASSES:
        ax.legend(title="class", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    else:
        sm = cm.ScalarMappable(norm=colors.Normalize(0, k - 1), cmap=cmap)
        fig.colorbar(sm, ax=ax, label="class")


def _heatmap(fig: Figure, ax: Axes, counts: np.ndarray) -> None:
    """Parties x classes of each party's class proportions, with a colorbar."""
    n, k = counts.shape
    sizes = counts.sum(axis=1, keepdims=True)
    props = np.divide(counts, sizes, out=np.zeros_like(counts), where=sizes > 0)
    label = "party"
    if n > _MAX_HEATMAP_ROWS:
        block = -(-n // _MAX_HEATMAP_ROWS)
        rows = -(-n // block)
        padded = np.full((rows * block, k), np.nan)
        padded[:n] = props
        props = np.nanmean(padded.reshape(rows, block, k), axis=1)
        label = f"party (each row the mean of {block} parties)"
    # nearest keeps class columns sharp; a figure tall enough for ~1 pixel a party up
    # to 1,200 parties keeps most rows
    im = ax.imshow(
        props,
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        extent=(-0.5, k - 0.5, n - 0.5, -0.5),
    )
    fig.colorbar(im, ax=ax, label="fraction of the party's samples")
    ax.set_xlabel("class")
    ax.set_ylabel(label)
