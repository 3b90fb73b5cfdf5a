"""Reports of a run or a sweep directory: PNG figures (matplotlib, Agg) and ``report.md``.

``report(dir)`` detects what ``dir`` is from its files:

* a **run directory** (``config.yaml`` with ``metrics.jsonl`` or ``summary.json``): its
  accuracy and loss curves and model heterogeneity over rounds (:func:`fedsim.plots.plot_run`,
  into ``plots/``), its label distribution, and its summary and data heterogeneity as
  tables;
* a **sweep directory** (``sweep.json`` or ``summary.csv``, or sub-directories that are
  runs): the results table (mean ± sample std over seeds, as in ``table.md``), the model
  selection if any, and into ``figures/``: test accuracy and loss over rounds (one panel
  per partition setting, one line per strategy: the mean over seeds with a ± std band),
  final test accuracy against a data-heterogeneity measure (``tv_mean`` by default, or
  any key of summary.json's ``heterogeneity``, or ``beta``), the accuracy drop of every
  setting relative to the IID setting of the same strategy (bar chart and table), model
  heterogeneity over rounds (client drift, update cosine, gradient diversity) and
  the label distribution of each partition setting (its first seed).

Sweep directories without ``sweep.json`` (a folder of run directories) are grouped by
strategy and partition, read from each run's summary and config.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import RunDirError
from .store import atomic_write_text, read_json, read_jsonl
from .sweep import (
    STRATEGY_FACTORS,
    Factor,
    Setting,
    make_table,
    mean_std,
)

log = logging.getLogger(__name__)

HETEROGENEITY_SERIES = (
    ("client_drift_mean", "client drift (mean)"),
    ("update_cosine_mean", "update cosine (mean)"),
    ("gradient_diversity", "gradient diversity"),
)
FIGURES = "figures"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------- data


@dataclass
class RunInfo:
    """One run of a sweep as the report sees it."""

    name: str
    path: Path
    factors: dict[str, str]
    seed: int | None
    status: str
    error: str | None = None
    summary: dict | None = None
    _history: list[dict] | None = field(default=None, repr=False)

    @property
    def history(self) -> list[dict]:
        if self._history is None:
            self._history = read_jsonl(self.path / "metrics.jsonl")
        return self._history

    @property
    def scheme(self) -> str | None:
        part = (self.summary or {}).get("partition") or {}
        if part.get("scheme"):
            return part["scheme"]
        cfg = _read_config(self.path)
        return (cfg.get("partition") or {}).get("scheme")

    def value(self, key: str) -> Any:
        return (self.summary or {}).get(key)


@dataclass
class SweepView:
    name: str
    factors: list[Factor]
    runs: list[RunInfo]
    seeds: list[int] | None
    tune: list[str]


def _read_json(path: Path) -> dict | None:
    """A JSON object file, or None when it is missing or damaged (a sweep's report goes on)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_config(run_dir: Path) -> dict:
    import yaml

    try:
        return yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return {}


def _is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").exists() and ((path / "metrics.jsonl").exists() or (path / "summary.json").exists())


def _finished(summary: dict | None) -> bool:
    return bool(summary) and summary.get("status") in ("finished", "diverged")


def _partition_label(part: dict) -> str:
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


def load_sweep(sweep_dir: Path) -> SweepView:
    """The runs of a sweep directory, from ``sweep.json`` or from the run directories."""
    index = _read_json(sweep_dir / "sweep.json")
    if index and index.get("runs") is not None:
        folds = index.get("folds") or 0
        tune = list(index.get("tune") or [])
        runs = []
        for r in index["runs"]:
            if r.get("phase", "grid") == "cv":
                continue
            path = sweep_dir / r["name"]
            summary = _read_json(path / "summary.json")
            status = "finished" if _finished(summary) else ("failed" if r.get("status") == "failed" else "missing")
            runs.append(RunInfo(r["name"], path, dict(r.get("factors") or {}), r.get("seed"), status, r.get("error"), summary))
        factors = []
        for f in index.get("factors") or []:
            if folds and f["key"] in tune:
                continue  # the chosen value is part of the setting, not a factor of the table
            factors.append(Factor(f["key"], f.get("short", f["key"]), tuple(Setting(lbl, {}) for lbl in f["labels"])))
        return SweepView(index.get("name") or sweep_dir.name, factors, runs, index.get("seeds"), tune)
    # a plain folder of run directories: group by strategy and partition
    runs = []
    for sub in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and _is_run_dir(p)):
        summary = _read_json(sub / "summary.json")
        cfg = _read_config(sub)
        strategy = (summary or {}).get("strategy") or (cfg.get("strategy") or {}).get("name") or "?"
        part = (summary or {}).get("partition") or cfg.get("partition") or {}
        seed = (summary or {}).get("seed", cfg.get("seed"))
        status = "finished" if _finished(summary) else "missing"
        runs.append(RunInfo(sub.name, sub, {"strategy.name": str(strategy), "partition": _partition_label(part)}, seed, status, None, summary))
    if not runs:
        raise RunDirError(f"'{sweep_dir}' is neither a run directory nor a sweep directory (no sweep.json and no run directories)")
    factors = []
    for key, short in (("strategy.name", "strategy"), ("partition", "partition")):
        labels: list[str] = []
        for r in runs:
            if r.factors[key] not in labels:
                labels.append(r.factors[key])
        if key == "partition" and "iid" in labels:
            labels.remove("iid")
            labels.insert(0, "iid")
        if len(labels) > 1:
            factors.append(Factor(key, short, tuple(Setting(lbl, {}) for lbl in labels)))
    keys = {f.key for f in factors}
    for r in runs:
        r.factors = {k: v for k, v in r.factors.items() if k in keys}
    seeds = sorted({r.seed for r in runs if r.seed is not None}) or None
    return SweepView(sweep_dir.name, factors, runs, seeds, [])


# -------------------------------------------------------------------- layout


def _series_factor(view: SweepView) -> Factor | None:
    strat = next((f for f in view.factors if f.key in STRATEGY_FACTORS), None)
    if strat is not None:
        return strat
    return view.factors[0] if len(view.factors) == 1 else (view.factors[0] if view.factors else None)


def _partition_factors(view: SweepView) -> list[Factor]:
    return [f for f in view.factors if f.key == "partition" or f.key.startswith("partition.")]


def _combo_label(combo: Sequence[str]) -> str:
    return " / ".join(combo) if combo else "all"


@dataclass
class Layout:
    """Lines (series) and panels of the sweep figures."""

    series: Factor | None
    panels: list[Factor]

    def series_labels(self, view: SweepView) -> list[str]:
        if self.series is None:
            labels = []
            for r in view.runs:
                s = str(r.value("strategy") or "run")
                if s not in labels:
                    labels.append(s)
            return labels or ["run"]
        return self.series.labels

    def series_of(self, r: RunInfo) -> str:
        return r.factors.get(self.series.key, "?") if self.series is not None else str(r.value("strategy") or "run")

    def panel_combos(self) -> list[tuple[str, ...]]:
        import itertools

        return list(itertools.product(*[f.labels for f in self.panels]))

    def panel_of(self, r: RunInfo) -> tuple[str, ...]:
        return tuple(r.factors.get(f.key, "?") for f in self.panels)


def _layout(view: SweepView) -> Layout:
    series = _series_factor(view)
    if series is not None and series.key not in STRATEGY_FACTORS and len(view.factors) == 1:
        return Layout(series, [])  # an ablation: one panel, one line per value
    return Layout(series, [f for f in view.factors if f is not series])


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lbl: cmap(i % cmap.N) for i, lbl in enumerate(labels)}


def _aggregate_curves(runs: Sequence[RunInfo], key: str) -> tuple[list[int], list[float], list[float]]:
    """Rounds every run recorded ``key`` in, the mean over runs and the sample std (0 for one run)."""
    per_run = []
    for r in runs:
        d = {int(row["round"]): float(row[key]) for row in r.history if row.get(key) is not None and math.isfinite(float(row[key]))}
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
    ncols = min(3, max(1, n))
    return math.ceil(n / ncols), ncols


def _finished_runs(view: SweepView) -> list[RunInfo]:
    return [r for r in view.runs if r.status == "finished"]


# ------------------------------------------------------------------- figures


def plot_curves(view: SweepView, layout: Layout, keys: Sequence[tuple[str, str, str]], ylabel: str, path: Path) -> bool:
    """One panel per setting, one line per series (mean over seeds, ± std band).

    ``keys``: (metrics key, line style, legend suffix).
    """
    runs = _finished_runs(view)
    combos = layout.panel_combos() or [()]
    labels = layout.series_labels(view)
    colors = _colors(labels)
    plt = _plt()
    nrows, ncols = _grid(len(combos))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    drawn = False
    for i, combo in enumerate(combos):
        ax = axes[i // ncols][i % ncols]
        for lbl in labels:
            members = [r for r in runs if layout.series_of(r) == lbl and layout.panel_of(r) == tuple(combo)]
            for key, style, suffix in keys:
                xs, ms, sds = _aggregate_curves(members, key)
                if not xs:
                    continue
                drawn = True
                ax.plot(xs, [m * (100 if "accuracy" in key else 1) for m in ms], style, color=colors[lbl], label=f"{lbl}{suffix}",
                        marker="o" if len(xs) < 25 else None, ms=3)
                if any(sds) and key == keys[0][0]:  # one band per line keeps the panel readable
                    scale = 100 if "accuracy" in key else 1
                    ax.fill_between(xs, [(m - s) * scale for m, s in zip(ms, sds)], [(m + s) * scale for m, s in zip(ms, sds)],
                                    color=colors[lbl], alpha=0.15, linewidth=0)
        ax.set_title(_combo_label(combo))
        ax.set_xlabel("round")
        _int_rounds(ax)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for j in range(len(combos), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    if drawn:
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def _het_value(r: RunInfo, measure: str) -> float | None:
    s = r.summary or {}
    if measure == "beta":
        part = s.get("partition") or {}
        return part.get("beta") if part.get("scheme") in ("dirichlet", "quantity-skew") else None
    v = (s.get("heterogeneity") or {}).get(measure)
    return float(v) if v is not None else None


def plot_accuracy_vs_heterogeneity(view: SweepView, layout: Layout, measure: str, path: Path) -> bool:
    """Final test accuracy of every run against a data-heterogeneity measure, per series.

    Dots are runs; the line joins the mean (over seeds) of each setting, sorted by the
    setting's mean measure.
    """
    runs = [r for r in _finished_runs(view) if r.value("test_accuracy") is not None and _het_value(r, measure) is not None]
    if not runs:
        return False
    labels = layout.series_labels(view)
    colors = _colors(labels)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for lbl in labels:
        members = [r for r in runs if layout.series_of(r) == lbl]
        if not members:
            continue
        ax.scatter([_het_value(r, measure) for r in members], [100 * r.value("test_accuracy") for r in members],
                   color=colors[lbl], alpha=0.45, s=18)
        pts = []
        for combo in layout.panel_combos() or [()]:
            group = [r for r in members if layout.panel_of(r) == tuple(combo)]
            if group:
                x, _, _ = mean_std(_het_value(r, measure) for r in group)
                y, _, _ = mean_std(r.value("test_accuracy") for r in group)
                pts.append((x, 100 * y))
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=colors[lbl], label=lbl, ms=4)
    if measure == "beta":
        ax.set_xscale("log")
    ax.set_xlabel(f"data heterogeneity: {measure}")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


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
    layout = _drop_layout(view)
    pfactors = _partition_factors(view)
    if not pfactors:
        return []
    ctx_factors = [f for f in view.factors if f is not layout.series and f not in pfactors]
    runs = [r for r in _finished_runs(view) if r.value("test_accuracy") is not None]
    groups: dict[tuple, list[RunInfo]] = {}
    for r in runs:
        key = (layout.series_of(r), tuple(r.factors.get(f.key) for f in ctx_factors), tuple(r.factors.get(f.key) for f in pfactors))
        groups.setdefault(key, []).append(r)
    out = []
    import itertools

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


def _drop_layout(view: SweepView) -> Layout:
    """The figures' layout, except that a partition factor is never the series here:
    in a sweep over partitions alone, the lines are the strategy (one) and the IID
    setting is every other setting's reference."""
    layout = _layout(view)
    if layout.series is not None and layout.series in _partition_factors(view):
        return Layout(None, [])
    return layout


def _drop_grid(drops: Sequence[DropRow], view: SweepView):
    """(layout, series with drops, (context, setting) keys in order, drop by cell)."""
    layout = _drop_layout(view)
    series = [s for s in layout.series_labels(view) if any(d.series == s for d in drops)]
    keys: list[tuple] = []
    for d in drops:
        if (d.context, d.setting) not in keys:
            keys.append((d.context, d.setting))
    return layout, series, keys, {(d.context, d.setting, d.series): d for d in drops}


def drop_table(drops: Sequence[DropRow], view: SweepView) -> str:
    """Markdown: rows = settings (with context), columns = series, cells = drop in percentage points."""
    layout, series, keys, by = _drop_grid(drops, view)
    iid_ref = {}
    for d in drops:
        iid_ref.setdefault((d.context, d.series), d.iid_mean)
    lines = ["Accuracy drop against IID: mean final test accuracy of the IID setting minus that of each setting, "
             "in percentage points (positive = worse than IID), same strategy, means over seeds.", ""]
    lines.append("| setting | " + " | ".join(series) + " |")
    lines.append("| --- | " + " | ".join("---:" for _ in series) + " |")
    contexts = []
    for ctx, _ in keys:
        if ctx not in contexts:
            contexts.append(ctx)
    for ctx in contexts:
        prefix = (" / ".join(ctx) + " / ") if ctx else ""
        lines.append(f"| {prefix}IID accuracy (%) | " + " | ".join(
            f"{100 * iid_ref[(ctx, s)]:.2f}" if (ctx, s) in iid_ref else "–" for s in series) + " |")
        for c, setting in keys:
            if c != ctx:
                continue
            cells = [f"{100 * by[(ctx, setting, s)].drop:.2f}" if (ctx, setting, s) in by else "–" for s in series]
            lines.append(f"| {prefix}{' / '.join(setting)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_drops(drops: Sequence[DropRow], view: SweepView, path: Path) -> bool:
    if not drops:
        return False
    layout, series, keys, by = _drop_grid(drops, view)
    colors = _colors(layout.series_labels(view))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(keys) * max(1, len(series)) / 2 + 2), 4))
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
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_model_heterogeneity(view: SweepView, layout: Layout, path: Path) -> bool:
    """Rows: client drift, update cosine, gradient diversity; columns: settings; lines: series."""
    runs = _finished_runs(view)
    combos = layout.panel_combos() or [()]
    labels = layout.series_labels(view)
    colors = _colors(labels)
    plt = _plt()
    ncols = len(combos)
    fig, axes = plt.subplots(len(HETEROGENEITY_SERIES), ncols, figsize=(4.2 * ncols, 2.8 * len(HETEROGENEITY_SERIES)), squeeze=False)
    drawn = False
    for j, combo in enumerate(combos):
        for i, (key, name) in enumerate(HETEROGENEITY_SERIES):
            ax = axes[i][j]
            for lbl in labels:
                members = [r for r in runs if layout.series_of(r) == lbl and layout.panel_of(r) == tuple(combo)]
                xs, ms, sds = _aggregate_curves(members, key)
                if not xs:
                    continue
                drawn = True
                ax.plot(xs, ms, color=colors[lbl], label=lbl)
                if any(sds):
                    ax.fill_between(xs, [m - s for m, s in zip(ms, sds)], [m + s for m, s in zip(ms, sds)], color=colors[lbl], alpha=0.15, linewidth=0)
            if i == 0:
                ax.set_title(_combo_label(combo))
            if j == 0:
                ax.set_ylabel(name)
            if i == len(HETEROGENEITY_SERIES) - 1:
                ax.set_xlabel("round")
            _int_rounds(ax)
            ax.grid(alpha=0.3)
    if drawn:
        handles, lbls = axes[0][0].get_legend_handles_labels()
        if handles:
            axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def _label_distribution(run_dir: Path, dest: Path, title: str) -> bool:
    """Copy the run's plots/label_distribution.png, or draw it from partition.json."""
    src = run_dir / "plots" / "label_distribution.png"
    if src.exists() and src.stat().st_size > 0:
        shutil.copyfile(src, dest)
        return True
    part = _read_json(run_dir / "partition.json")
    if part and part.get("class_counts"):
        import partitioners

        partitioners.plot_label_distribution(part["class_counts"], dest, title=title)
        return dest.exists()
    return False


# --------------------------------------------------------------------- report


def _fig_name(text: str) -> str:
    """A figure file name that needs no escaping in a Markdown link."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", text.replace("#", "n"))


def _int_rounds(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _img(rel: str, alt: str) -> str:
    return f"![{alt}]({rel})"


def report_sweep(sweep_dir: Path, measure: str = "tv_mean") -> Path:
    view = load_sweep(sweep_dir)
    layout = _layout(view)
    figs = sweep_dir / FIGURES
    figs.mkdir(exist_ok=True)
    finished = _finished_runs(view)
    failed = [r for r in view.runs if r.status != "finished"]
    md = [f"# Sweep report: {view.name}", ""]
    md.append(f"{len(view.runs)} runs: {len(finished)} finished, {len(failed)} not finished"
              + (f"; seeds {view.seeds}" if view.seeds else "") + ".")
    md += ["", "## Results", ""]
    rows = [{**r.factors, "status": r.status, **{k: r.value(k) for k in ("test_accuracy", "best_test_accuracy", "test_f1_macro", "test_loss")}}
            for r in view.runs]
    md.append(make_table(rows, view.factors, view.seeds))
    sel = sweep_dir / "selection.md"
    if sel.exists():
        text = sel.read_text().split("\n", 1)
        md += ["## Model selection", "", (text[1] if text[0].startswith("# ") and len(text) > 1 else sel.read_text()).strip(), ""]

    def fig(title: str, fname: str, ok: bool, note: str = "", caption: str = "") -> None:
        md.extend([f"## {title}", ""])
        if ok:
            md.extend(([caption, ""] if caption else []) + [_img(f"{FIGURES}/{fname}", title), ""])
        else:
            md.extend([note or "No data for this figure.", ""])

    by = f", one line per {layout.series.short}" if layout.series is not None else ""
    panels = f"one panel per {' / '.join(f.short for f in layout.panels)}" if layout.panels else "one panel"
    band = f"Mean over seeds with a ± sample-std band; {panels}{by}."
    ok = plot_curves(view, layout, [("test_accuracy", "-", "")], "test accuracy (%)", figs / "accuracy_curves.png")
    fig("Test accuracy over rounds", "accuracy_curves.png", ok, caption=band)
    ok = plot_curves(view, layout, [("test_loss", "-", " (test)"), ("train_loss", "--", " (train)")], "loss", figs / "loss_curves.png")
    fig("Loss over rounds", "loss_curves.png", ok, caption="Test loss (solid) and local training loss (dashed). " + band)
    fname = f"accuracy_vs_{_fig_name(measure)}.png"
    ok = plot_accuracy_vs_heterogeneity(view, layout, measure, figs / fname)
    fig(f"Accuracy against data heterogeneity ({measure})", fname, ok, f"No run reports the heterogeneity measure '{measure}'.")
    drops = accuracy_drops(view)
    md += ["## Accuracy drop relative to IID", ""]
    if drops:
        plot_drops(drops, view, figs / "accuracy_drop.png")
        md += [drop_table(drops, view), _img(f"{FIGURES}/accuracy_drop.png", "accuracy drop vs IID"), ""]
    else:
        md += ["No IID setting in this sweep: no drop to compute.", ""]
    ok = plot_model_heterogeneity(view, layout, figs / "model_heterogeneity.png")
    fig("Model heterogeneity over rounds", "model_heterogeneity.png", ok)
    # label distributions: one per partition setting, from its first finished (lowest-seed) run
    md += ["## Label distribution", ""]
    pf = _partition_factors(view)
    settings: dict[tuple, RunInfo] = {}
    for r in sorted(view.runs, key=lambda r: (r.seed if r.seed is not None else 0)):
        key = tuple(r.factors.get(f.key) for f in pf)
        if key not in settings and (r.path / "partition.json").exists():
            settings[key] = r
    if not pf and settings:
        settings = dict(list(settings.items())[:1])
    for key, r in settings.items():
        label = _combo_label(key) if pf else "all runs"
        fname = f"label_{_fig_name(label)}.png"
        if _label_distribution(r.path, figs / fname, label):
            md += [f"### {label}", "", f"Seed {r.seed} ({r.name}).", "", _img(f"{FIGURES}/{fname}", f"label distribution {label}"), ""]
    if not settings:
        md += ["No partition.json found.", ""]
    if failed:
        md += ["## Runs not finished", "", "| run | status | error |", "| --- | --- | --- |"]
        for r in failed:
            md.append(f"| {r.name} | {r.status} | {(r.error or '').replace('|', '/')} |")
        md.append("")
    path = sweep_dir / "report.md"
    atomic_write_text(path, "\n".join(md).rstrip() + "\n")
    log.info("wrote %s", path)
    return path


_RUN_KEYS = ("status", "strategy", "dataset", "model", "rounds", "test_accuracy", "best_test_accuracy", "best_round", "test_f1_macro",
             "test_precision_macro", "test_recall_macro", "test_loss", "train_accuracy", "train_test_gap", "val_accuracy",
             "model_parameters", "bytes_up_total", "bytes_down_total", "failures_total", "wall_time_s", "seed", "config_hash")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return "–" if v is None else str(v)


def report_run(run_dir: Path) -> Path:
    from .plots import plot_run
    from .store import RunStore

    store = RunStore(run_dir)
    summary = read_json(store.summary, "summary") if store.summary.exists() else None
    md = [f"# Run report: {run_dir.name}", ""]
    if not _finished(summary):
        md += ["The run has not finished (no finished summary.json); the curves show the rounds recorded so far.", ""]
    if summary:
        md += ["## Summary", "", "| metric | value |", "| --- | ---: |"]
        for k in _RUN_KEYS:
            if k in summary:
                md.append(f"| {k} | {_fmt(summary[k])} |")
        if summary.get("partition"):
            md.append(f"| partition | {_fmt(summary['partition'])} |")
        md.append("")
        het = summary.get("heterogeneity") or {}
        if het:
            md += ["## Data heterogeneity", "", "| measure | value |", "| --- | ---: |"]
            md += [f"| {k} | {_fmt(v)} |" for k, v in het.items() if not isinstance(v, (list, dict))]
            md.append("")
    plots = plot_run(store)
    names = {p.name: p for p in plots}
    for fname, title in (("accuracy.png", "Accuracy over rounds"), ("loss.png", "Loss over rounds"),
                         ("heterogeneity.png", "Model heterogeneity over rounds")):
        if fname in names:
            md += [f"## {title}", "", _img(f"plots/{fname}", title), ""]
    if not plots:
        md += ["No rounds recorded yet (metrics.jsonl is empty).", ""]
    dest = store.plots / "label_distribution.png"
    store.plots.mkdir(parents=True, exist_ok=True)
    if dest.exists() or _label_distribution(run_dir, dest, run_dir.name):
        md += ["## Label distribution", "", _img("plots/label_distribution.png", "label distribution"), ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(md).rstrip() + "\n")
    log.info("wrote %s", path)
    return path


def report(dir: str | Path, measure: str = "tv_mean") -> Path:
    """Write ``report.md`` (and its PNGs) for a run or a sweep directory; return its path.

    ``measure`` is the x axis of the accuracy-against-heterogeneity figure: a key of
    summary.json's ``heterogeneity`` (``tv_mean``, ``js_mean``, ``hellinger_mean``,
    ``size_cv``, ...) or ``beta``.
    """
    path = Path(dir)
    if not path.is_dir():
        raise RunDirError(f"'{path}' is not a directory; give a run directory or a sweep directory")
    if (path / "sweep.json").exists() or (path / "summary.csv").exists():
        return report_sweep(path, measure)
    if (path / "config.yaml").exists():
        return report_run(path)
    if any(_is_run_dir(p) for p in path.iterdir() if p.is_dir()):
        return report_sweep(path, measure)
    raise RunDirError(f"'{path}' is neither a run directory (config.yaml) nor a sweep directory (sweep.json, summary.csv or run directories)")
