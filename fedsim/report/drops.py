"""The accuracy drop of every partition setting against the IID setting of the same
strategy: the numbers and their Markdown table."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from fedsim.report.load import Layout, RunInfo, SweepView, finished_runs, layout_of, partition_factors
from fedsim.sweeps import mean_std
from fedsim.util.formatting import diverged_mark, format_mean_std, format_percent


@dataclass
class DropRow:
    """Accuracy of one setting and its drop against IID, for one series."""

    context: tuple[str, ...]
    setting: tuple[str, ...]
    series: str
    iid_mean: float
    mean: float
    drop: float  # iid_mean - mean, in accuracy units (x100 for percentage points)
    #: sample std (ddof=1) over seeds of the per-seed drop IID(seed) - setting(seed), None under 2 seeds
    std: float | None = None
    #: seeds with both an IID run and a run of the setting (the pairs behind ``std``)
    n_pairs: int = 0
    #: diverged runs among the IID runs and the setting's runs (the means include them: marked †)
    diverged: int = 0
    #: of those, the IID runs'
    iid_diverged: int = 0


def _by_seed(runs: Sequence[RunInfo]) -> dict[int, float]:
    """Each seed's test accuracy (the mean when a seed has several runs)."""
    per: dict[int, list[float]] = {}
    for r in runs:
        if r.seed is not None and r.value("test_accuracy") is not None:
            per.setdefault(int(r.seed), []).append(float(r.value("test_accuracy")))
    return {s: sum(v) / len(v) for s, v in per.items()}


def accuracy_drops(view: SweepView) -> list[DropRow]:
    """Drop of each partition setting's mean final test accuracy from the IID setting's.

    For every series (strategy) and every combination of the factors that are neither the
    series nor partition factors (the context), the reference is the mean over seeds of
    the runs whose partition scheme is ``iid``; ``drop = mean(IID) - mean(setting)``.
    Its spread is the sample std over seeds of the paired drops IID(seed) - setting(seed)
    (a seed fixes the initial model and the cohorts in both). Empty when the sweep has
    no IID setting.
    """
    layout = drop_layout(view)
    pfactors = partition_factors(view)
    if not pfactors:
        return []
    # a factor with one value (the attack of a defences sweep) tells no setting from another
    ctx_factors = [f for f in view.factors if f is not layout.series and f not in pfactors and len(f.labels) > 1]
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
            ref_runs = [r for s in iid for r in groups[(series, ctx, s)]]
            ref, _, _ = mean_std(r.value("test_accuracy") for r in ref_runs)
            ref_seeds = _by_seed(ref_runs)
            for s in settings:
                if s in iid:
                    continue
                runs_s = groups[(series, ctx, s)]
                m, _, _ = mean_std(r.value("test_accuracy") for r in runs_s)
                seeds = _by_seed(runs_s)
                pairs = [ref_seeds[k] - seeds[k] for k in sorted(seeds) if k in ref_seeds]
                _, sd, _ = mean_std(pairs)
                n_iid = sum(r.diverged for r in ref_runs)
                n_div = n_iid + sum(r.diverged for r in runs_s)
                out.append(DropRow(tuple(ctx), tuple(s), series, ref, m, ref - m, sd, len(pairs), n_div, n_iid))
    return out


def drop_layout(view: SweepView) -> Layout:
    """The figures' layout, except that a partition factor is never the series here (IID
    is every other partition's reference): then the series is the first other factor
    that varies (the defences of a defences x partitions sweep), or, without one, the
    strategies run (a sweep over partitions alone)."""
    layout = layout_of(view)
    pf = partition_factors(view)
    if layout.series is not None and layout.series not in pf:
        return layout
    return Layout(next((f for f in view.factors if f not in pf and len(f.labels) > 1), None), [])


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
        iid_ref.setdefault((d.context, d.series), format_percent(d.iid_mean) + (" †" if d.iid_diverged else ""))
    lines = [
        "Accuracy drop against IID: mean final test accuracy of the IID setting minus that of each setting, "
        "in percentage points (positive = worse than IID), same strategy, means over seeds; ± the sample std "
        "(ddof=1) over seeds of the paired drop IID(seed) - setting(seed).",
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
        lines.append(f"| {prefix}IID accuracy (%) | " + " | ".join(iid_ref.get((ctx, s), "–") for s in series) + " |")
        for c, setting in keys:
            if c != ctx:
                continue
            cells = [_drop_cell(by[(ctx, setting, s)]) if (ctx, setting, s) in by else "–" for s in series]
            lines.append(f"| {prefix}{' / '.join(setting)} | " + " | ".join(cells) + " |")
    if any(d.diverged for d in drops):
        lines += ["", "† the IID or the setting's runs include runs whose training diverged (status 'diverged')."]
    return "\n".join(lines) + "\n"


def _drop_cell(d: DropRow) -> str:
    """``33.00 ± 6.10``, with ``† (1 diverged)`` when a diverged run is in either mean."""
    return format_mean_std(d.drop, d.std) + diverged_mark(d.diverged)
