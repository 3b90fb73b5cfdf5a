"""The accuracy drop of every partition setting against the IID setting of the same
strategy: the numbers and their Markdown table."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from ..sweeps import mean_std
from .load import Layout, RunInfo, SweepView, finished_runs, layout_of, partition_factors


@dataclass
class DropRow:
    """Accuracy of one setting and its drop against IID, for one series."""

    context: tuple[str, ...]
    setting: tuple[str, ...]
    series: str
    iid_mean: float
    mean: float
    drop: float  # iid_mean - mean, in accuracy units (x100 for percentage points)


def accuracy_drops(view: SweepView) -> list[DropRow]:
    """Drop of each partition setting's mean final test accuracy from the IID setting's.

    For every series (strategy) and every combination of the factors that are neither the
    series nor partition factors (the context), the reference is the mean over seeds of
    the runs whose partition scheme is ``iid``; ``drop = mean(IID) - mean(setting)``.
    Empty when the sweep has no IID setting.
    """
    layout = drop_layout(view)
    pfactors = partition_factors(view)
    if not pfactors:
        return []
    ctx_factors = [f for f in view.factors if f is not layout.series and f not in pfactors]
    runs = [r for r in finished_runs(view) if r.value("test_accuracy") is not None]
    groups: dict[tuple, list[RunInfo]] = {}
    for r in runs:
        key = (
            layout.series_of(r),
            tuple(r.factors.get(f.key) for f in ctx_factors),
            tuple(r.factors.get(f.key) for f in pfactors),
        )
        groups.setdefault(key, []).append(r)
    out = []
    for series in layout.series_labels(view):
        for ctx in itertools.product(*[f.labels for f in ctx_factors]):
            settings = [s for s in itertools.product(*[f.labels for f in pfactors]) if (series, ctx, s) in groups]
            iid = [s for s in settings if all(r.scheme == "iid" for r in groups[(series, ctx, s)])]
            if not iid:
                continue
            ref, _, _ = mean_std(r.value("test_accuracy") for s in iid for r in groups[(series, ctx, s)])
            for s in settings:
                if s in iid:
                    continue
                m, _, _ = mean_std(r.value("test_accuracy") for r in groups[(series, ctx, s)])
                out.append(DropRow(tuple(ctx), tuple(s), series, ref, m, ref - m))
    return out


def drop_layout(view: SweepView) -> Layout:
    """The figures' layout, except that a partition factor is never the series here:
    in a sweep over partitions alone, the lines are the strategy (one) and the IID
    setting is every other setting's reference."""
    layout = layout_of(view)
    if layout.series is not None and layout.series in partition_factors(view):
        return Layout(None, [])
    return layout


def drop_grid(drops: Sequence[DropRow], view: SweepView) -> tuple[Layout, list[str], list[tuple], dict[tuple, DropRow]]:
    """(layout, series with drops, (context, setting) keys in order, drop by cell)."""
    layout = drop_layout(view)
    series = [s for s in layout.series_labels(view) if any(d.series == s for d in drops)]
    keys: list[tuple] = []
    for d in drops:
        if (d.context, d.setting) not in keys:
            keys.append((d.context, d.setting))
    return layout, series, keys, {(d.context, d.setting, d.series): d for d in drops}


def drop_table(drops: Sequence[DropRow], view: SweepView) -> str:
    """Markdown: rows = settings (with context), columns = series, cells = drop in percentage points."""
    layout, series, keys, by = drop_grid(drops, view)
    iid_ref = {}
    for d in drops:
        iid_ref.setdefault((d.context, d.series), d.iid_mean)
    lines = [
        "Accuracy drop against IID: mean final test accuracy of the IID setting minus that of each setting, "
        "in percentage points (positive = worse than IID), same strategy, means over seeds.",
        "",
    ]
    lines.append("| setting | " + " | ".join(series) + " |")
    lines.append("| --- | " + " | ".join("---:" for _ in series) + " |")
    contexts = []
    for ctx, _ in keys:
        if ctx not in contexts:
            contexts.append(ctx)
    for ctx in contexts:
        prefix = (" / ".join(ctx) + " / ") if ctx else ""
        lines.append(
            f"| {prefix}IID accuracy (%) | "
            + " | ".join(f"{100 * iid_ref[(ctx, s)]:.2f}" if (ctx, s) in iid_ref else "–" for s in series)
            + " |"
        )
        for c, setting in keys:
            if c != ctx:
                continue
            cells = [f"{100 * by[(ctx, setting, s)].drop:.2f}" if (ctx, setting, s) in by else "–" for s in series]
            lines.append(f"| {prefix}{' / '.join(setting)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
