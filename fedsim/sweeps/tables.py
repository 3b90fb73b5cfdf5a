"""A sweep's numbers as tables: mean ± sample std over seeds, the Markdown results
table, and summary.csv (one row per run).

Tables report mean ± std over seeds where std is the **sample** standard deviation
(Bessel-corrected, ddof=1, ``statistics.stdev``): s = sqrt(sum((x_i - mean)^2) / (n - 1));
with a single finished seed only the mean is shown. Accuracies are in percent with two
decimals, as in NIID-Bench (Li et al. 2022, "Federated Learning on Non-IID Data Silos:
An Experimental Study").
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fedsim.sweeps.spec import STRATEGY_FACTORS, Factor, PlannedRun
from fedsim.util.formatting import diverged_mark, format_mean_std

#: summary.json statuses of a run that has ended with results: all its rounds, stopped
#: early on purpose (the privacy budget), or diverged, a result too, marked with †
#: wherever a number it enters is shown
DONE = ("finished", "stopped", "diverged", "budget")
#: the footnote of every table that marks a diverged run
DAGGER_NOTE = (
    "† runs whose training diverged are in the mean (status 'diverged' in summary.csv, with diverged_round and "
    "divergence_reason)."
)

#: a run's final metrics in summary.json, in the order every listing of them shows them
FINAL_METRICS = (
    "test_accuracy",
    "best_test_accuracy",
    "test_f1_macro",
    "test_precision_macro",
    "test_recall_macro",
    "test_loss",
    "train_accuracy",
)
#: summary.json keys copied into summary.csv, in this order
METRIC_COLUMNS = (
    *FINAL_METRICS,
    "val_accuracy",
    "wall_time_s",
    "attack_success_rate",
    # the bytes the run sent (communication against accuracy: fedsim/sweeps/comm_tables.py)
    "bytes_up_total",
    "bytes_down_total",
)
#: summary.json keys of the per-party evaluation (``eval.local_test``), copied into
#: summary.csv when a run has them
PARTY_COLUMNS = tuple(
    f"{mode}_test_accuracy{stat}"
    for mode in ("local", "personal", "finetune")
    for stat in ("", "_std", "_worst10", "_best10", "_worst", "_jain")
)
#: summary.json["heterogeneity"] keys copied into summary.csv
HETEROGENEITY_COLUMNS = ("tv_mean", "hellinger_mean", "js_mean", "size_cv")
#: the ablation table's columns: (summary key, header, shown in percent)
ABLATION_COLUMNS = (
    ("test_accuracy", "test acc (%)", True),
    ("best_test_accuracy", "best test acc (%)", True),
    ("test_f1_macro", "test F1 macro (%)", True),
    ("test_loss", "test loss", False),
)


# ------------------------------------------------------------------ statistics


def has_result(row: Mapping[str, Any]) -> bool:
    """Whether a row (of summary.csv, or a report's) is a run that ended with results."""
    return row.get("status") in DONE


def is_diverged(row: Mapping[str, Any]) -> bool:
    """Whether a row is a run whose training diverged (its status, or for rows written
    before the status said so, its ``diverged_round``)."""
    return row.get("status") == "diverged" or row.get("diverged_round") is not None


def dagger(rows: Iterable[Mapping[str, Any]]) -> str:
    """`` † (2 diverged)`` when rows whose numbers enter a cell diverged, else ``""``."""
    return diverged_mark(sum(1 for r in rows if is_diverged(r)))


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std with ddof=1 or None for n < 2, n) of the finite values."""
    xs = [float(v) for v in values if v is not None and v != "" and math.isfinite(float(v))]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def _group(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[tuple, list[Mapping[str, Any]]]:
    out: dict[tuple, list] = {}
    for r in rows:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def _ordered_combos(factors: Sequence[Factor]) -> list[tuple[str, ...]]:
    return list(itertools.product(*[f.labels for f in factors]))


def md_row(cells: Sequence[str]) -> str:
    """One Markdown table row; a ``|`` inside a cell is escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def std_note(seeds: Sequence[int] | None) -> str:
    """The captions' words for what a cell's ± means."""
    s = f"over seeds {list(seeds)}" if seeds else "over seeds"
    return f"mean ± sample std (ddof=1) {s}"


def make_table(
    rows: Sequence[Mapping[str, Any]],
    factors: Sequence[Factor],
    seeds: Sequence[int] | None = None,
    caption_extra: str = "",
) -> str:
    """The Markdown results table of finished rows (mean ± sample std, see the module docstring).

    With a strategy factor (``strategy.name`` or the ``strategy`` section): rows are the
    combinations of the other factors, columns the strategies, each cell the test
    accuracy in % as mean ± std, the best mean of a row in bold (NIID-Bench's layout).
    Otherwise an ablation table: one row per combination of the factors and the
    columns of :data:`ABLATION_COLUMNS`.
    """
    ok = [r for r in rows if has_result(r)]
    strat = next((f for f in factors if f.key in STRATEGY_FACTORS), None)
    if strat is not None:
        lines = _strategy_table(ok, factors, strat, seeds, caption_extra)
    else:
        lines = _ablation_table(ok, factors, seeds, caption_extra)
    if any(r.get("sim_time_s") is not None for r in ok):
        lines += [""] + _time_table(ok, factors, seeds)
    if any(is_diverged(r) for r in ok):
        lines += ["", DAGGER_NOTE]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------- simulated time

#: summary.csv's columns of the simulated clock (``system.*``), besides ``tta_<target>_s``
TIME_COLUMNS = ("sim_time_s", "slow_quartile_share", "slow_quartile_accuracy")


def time_columns(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A run's simulated time, time to each target accuracy (``tta_<target>_s``, the
    round without a clock: ``tta_<target>_round``) and its slow parties' share of the
    aggregated replies; nothing for a run with neither a clock nor targets."""
    out: dict[str, Any] = {}
    if "sim_time_s" in summary:
        out["sim_time_s"] = summary["sim_time_s"]
        out["slow_quartile_share"] = (summary.get("participation") or {}).get("slow_quartile_share")
        if (summary.get("participation") or {}).get("slow_quartile_accuracy") is not None:
            out["slow_quartile_accuracy"] = summary["participation"]["slow_quartile_accuracy"]
    for target, hit in (summary.get("time_to_accuracy") or {}).items():
        out[f"tta_{target}_round"] = None if hit is None else hit.get("round")
        if "sim_time_s" in summary:
            out[f"tta_{target}_s"] = None if hit is None else hit.get("sim_time_s")
        if hit is not None and "client_updates" in hit:  # summaries before client updates were counted lack it
            out[f"tta_{target}_updates"] = hit["client_updates"]
    return out


def is_time_column(key: str) -> bool:
    return key in TIME_COLUMNS or (key.startswith("tta_") and key.endswith(("_s", "_round", "_updates")))


def _time_table(ok: Sequence[Mapping[str, Any]], factors: Sequence[Factor], seeds: Sequence[int] | None) -> list[str]:
    """A row per setting: test accuracy, simulated time, time to each target accuracy
    (over the seeds that reached it, with how many did), the client updates aggregated
    until then (when the summaries count them) and the slowest quarter's share."""
    targets = sorted({k[4:-2] for r in ok for k in r if k.startswith("tta_") and k.endswith("_s")}, key=float)
    counted = [t for t in targets if any(r.get(f"tta_{t}_updates") is not None for r in ok)]
    groups = _group(ok, [f.key for f in factors])
    lines = _caption(
        f"Simulated time (system.*), {std_note(seeds)}: total simulated hours, hours to each target test accuracy "
        "over the seeds that reached it (reached/seeds), "
        + ("the client updates aggregated until then, " if counted else "")
        + "and the share of aggregated replies from the slowest quarter of the parties (0.25 when speed does not matter).",
        "",
    )
    head = " / ".join(f.short for f in factors) or "setting"
    names = [f"h to {_percent(t)}" for t in targets] + [f"updates to {_percent(t)}" for t in counted]
    # the slowest quarter's accuracy on its own test data, when the runs measured it (eval.local_test)
    slow_acc = any(r.get("slow_quartile_accuracy") not in (None, "") for r in ok)
    tail = ["slow share"] + (["slow quarter's acc (%)"] if slow_acc else [])
    lines.append(md_row([head, "test acc (%)", "simulated h"] + names + tail))
    lines.append(md_row(["---"] + ["---:"] * (len(names) + 2 + len(tail))))
    for combo in _ordered_combos(factors) or [()]:
        members = groups.get(tuple(combo), [])
        if not members:
            continue
        cells = [format_mean_std(*mean_std(r.get("test_accuracy") for r in members)[:2])]
        cells.append(_hours([r.get("sim_time_s") for r in members]))
        for t in targets:
            hit = [r.get(f"tta_{t}_s") for r in members]
            reached = [h for h in hit if h is not None]
            cells.append(_hours(reached) + f" ({len(reached)}/{len(members)})")
        for t in counted:
            m, sd, _ = mean_std(r.get(f"tta_{t}_updates") for r in members)
            cells.append(format_mean_std(m, sd, percent=False, digits=0))
        cells.append(format_mean_std(*mean_std(r.get("slow_quartile_share") for r in members)[:2], percent=False))
        if slow_acc:
            cells.append(format_mean_std(*mean_std(r.get("slow_quartile_accuracy") for r in members)[:2]))
        lines.append(md_row([" / ".join(combo) or "all"] + cells))
    return lines


def _percent(target: str) -> str:
    """A target accuracy as the tables name it: 0.9 -> 90%, 0.9268 -> 92.68%."""
    return f"{round(float(target) * 100, 4):g}%"


def _hours(seconds: Sequence[float | None]) -> str:
    m, sd, _ = mean_std(s / 3600.0 for s in seconds if s is not None)
    return format_mean_std(m, sd, percent=False, digits=2)


def _caption(text: str, extra: str) -> list[str]:
    """A table's caption line (with the caller's extra words) and the blank line after it."""
    return [text + (" " + extra if extra else ""), ""]


def _strategy_table(
    ok: Sequence[Mapping[str, Any]],
    factors: Sequence[Factor],
    strat: Factor,
    seeds: Sequence[int] | None,
    caption_extra: str,
) -> list[str]:
    """NIID-Bench's layout: a row per combination of the other factors, a column per strategy."""
    others = [f for f in factors if f is not strat]
    groups = _group(ok, [f.key for f in others] + [strat.key])
    caption = f"Test accuracy (%) after the last round, {std_note(seeds)}; the best strategy of each row in bold."
    lines = _caption(caption, caption_extra)
    lines.append(md_row([" / ".join(f.short for f in others) or "setting"] + strat.labels))
    lines.append(md_row(["---"] + ["---:"] * len(strat.labels)))
    expected = len(seeds) if seeds else None
    for combo in _ordered_combos(others) or [()]:
        members = [groups.get(tuple(combo) + (s,), []) for s in strat.labels]
        lines.append(md_row([" / ".join(combo) or "all"] + _strategy_cells(members, expected)))
    return lines


def _strategy_cells(members_of: Sequence[Sequence[Mapping[str, Any]]], expected: int | None) -> list[str]:
    """One row's cells, a strategy's runs each: test accuracy mean ± std, the best mean in
    bold (equal at two decimals: a tie is bold twice), ``(n=2)`` where seeds are missing."""
    stats = []
    for members in members_of:
        m, sd, n = mean_std(r.get("test_accuracy") for r in members)
        stats.append((m, sd, n, dagger(members)))
    means = [m for m, _, _, _ in stats if m is not None]
    best = max(means) if means else None
    cells = []
    for m, sd, n, div in stats:
        text = format_mean_std(m, sd)
        if m is not None and best is not None and round(m * 100, 2) == round(best * 100, 2):
            text = f"**{text}**"
        if m is not None and expected is not None and n < expected:
            text += f" (n={n})"
        cells.append(text + div)
    return cells


def _ablation_table(
    ok: Sequence[Mapping[str, Any]], factors: Sequence[Factor], seeds: Sequence[int] | None, caption_extra: str
) -> list[str]:
    """A row per combination of the factors, the columns of :data:`ABLATION_COLUMNS` and the run count."""
    groups = _group(ok, [f.key for f in factors])
    lines = _caption(f"Final-round metrics, {std_note(seeds)}; accuracies and F1 in %.", caption_extra)
    head = " / ".join(f.short for f in factors) or "setting"
    lines.append(md_row([head] + [h for _, h, _ in ABLATION_COLUMNS] + ["n"]))
    lines.append(md_row(["---"] + ["---:"] * (len(ABLATION_COLUMNS) + 1)))
    for combo in _ordered_combos(factors) or [()]:
        members = groups.get(tuple(combo), [])
        n_div = sum(1 for r in members if is_diverged(r))
        cells = []
        for key, _, pct in ABLATION_COLUMNS:
            m, sd, _ = mean_std(r.get(key) for r in members)
            cells.append(format_mean_std(m, sd, percent=pct) + (" †" if n_div and m is not None else ""))
        n = f"{len(members)} ({n_div} diverged)" if n_div else str(len(members))
        lines.append(md_row([" / ".join(combo) or "all"] + cells + [n]))
    return lines


def personal_table(
    rows: Sequence[Mapping[str, Any]], factors: Sequence[Factor], seeds: Sequence[int] | None = None
) -> str:
    """Accuracy on the parties' own test data (``eval.local_test``), or "" when no
    finished run has it.

    One row per strategy (and ``<strategy>+FT`` where runs fine-tuned the global
    model, ``eval.finetune_epochs``), two columns per setting of the other factors: the
    party's own model (``personal_test_accuracy``; the fine-tuned model on a +FT row)
    and the global model (``local_test_accuracy``). Each cell is the pooled accuracy
    over the parties' test samples in %, mean ± sample std over seeds.
    """
    ok = [r for r in rows if has_result(r) and r.get("local_test_accuracy") is not None]
    if not ok:
        return ""
    strat = next((f for f in factors if f.key in STRATEGY_FACTORS), None)
    others = [f for f in factors if f is not strat]
    strategies = strat.labels if strat is not None else ["all"]
    groups = _group(ok, [f.key for f in others] + ([strat.key] if strat is not None else []))
    combos = _ordered_combos(others) or [()]
    head = ["algorithm"]
    for combo in combos:
        label = " / ".join(combo)
        head += [f"{label}: own model".strip(": "), f"{label}: global model".strip(": ")]
    lines = [
        "Accuracy (%) on the parties' own test data after the last round (pooled over their test samples), "
        f"{std_note(seeds)}. Own model: the party's personalised model (+FT: the global model fine-tuned on the "
        "party's data); global model: the same global model for every party.",
        "",
        md_row(head),
        md_row(["---"] + ["---:"] * (len(head) - 1)),
    ]

    def cell(members, key) -> str:
        m, sd, _ = mean_std(r.get(key) for r in members)
        return format_mean_std(m, sd) + (dagger(members) if m is not None else "")

    for s in strategies:
        members_of = [groups.get(tuple(combo) + ((s,) if strat is not None else ()), []) for combo in combos]
        cells = [s]
        for members in members_of:
            cells += [cell(members, "personal_test_accuracy"), cell(members, "local_test_accuracy")]
        lines.append(md_row(cells))
        if any(r.get("finetune_test_accuracy") is not None for ms in members_of for r in ms):
            ft = [f"{s}+FT"]
            for members in members_of:
                ft += [cell(members, "finetune_test_accuracy"), cell(members, "local_test_accuracy")]
            lines.append(md_row(ft))
    if any(is_diverged(r) for r in ok):
        lines += ["", DAGGER_NOTE]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- summary.csv


def summary_row(r: PlannedRun, factors: Sequence[Factor], with_phase: bool) -> dict[str, Any]:
    """A run's row of summary.csv: name, factor labels, seed, status, metrics, heterogeneity, hash."""
    s = r.summary or {}
    het = s.get("heterogeneity") or {}
    row: dict[str, Any] = {"run": r.name}
    for f in factors:
        row[f.key] = r.factors.get(f.key)
    row["seed"] = r.seed
    if with_phase:
        row["phase"] = r.phase
        row["fold"] = r.fold
    # the run's own status: summary.json's (finished, diverged) once it has one
    row["status"] = r.status if r.status == "failed" else (s.get("status") or r.status)
    row["error"] = r.error
    row["diverged_round"] = s.get("diverged_round")
    row["divergence_reason"] = s.get("divergence_reason")
    for k in METRIC_COLUMNS:
        row[k] = s.get(k)
    for k in HETEROGENEITY_COLUMNS:
        row[k] = het.get(k)
    for k in PARTY_COLUMNS:
        if k in s:
            row[k] = s[k]
    row.update(time_columns(s))
    row["config_hash"] = r.hash
    return row


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of dict rows; the columns are the union of their keys in first-seen order."""
    if not rows:
        return ""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return buf.getvalue()


def read_summary_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """summary.csv back as dicts; numbers as floats, empty cells as None."""
    out = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in r.items():
                if v == "":
                    row[k] = None
                elif k in METRIC_COLUMNS or k in HETEROGENEITY_COLUMNS or k in PARTY_COLUMNS or is_time_column(k):
                    row[k] = float(v)
                elif k in ("seed", "fold", "diverged_round"):
                    row[k] = int(v)
                else:
                    row[k] = v
            out.append(row)
    return out
