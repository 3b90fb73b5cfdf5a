"""Honest model selection over a sweep's ``tune`` factors.

The factors named in ``tune`` are hyperparameters. For every combination of the other
factors (a *group*) the tune setting with the best mean validation metric over seeds is
chosen, without reading any test metric, and only that setting's test accuracy is
reported (``selection.md``/``selection.csv``). With ``folds=K`` the validation score is
K-fold cross-validation on the training data (``data.cv_folds=K``, ``data.cv_fold=i``:
the held-out fold is the evaluation set, so a fold run's ``test_*`` metrics are
validation metrics); the chosen setting of each group then runs on the full training
data and its real test accuracy is reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedsim.sweeps.spec import Factor, SweepSpec
from fedsim.sweeps.tables import DAGGER_NOTE, md_row, mean_std, std_note, to_csv
from fedsim.util.formatting import diverged_mark, format_mean_std


@dataclass
class Choice:
    """The tune setting chosen for one group, and the validation scores it beat."""

    group: dict[str, str]
    chosen: dict[str, str] | None
    score_mean: float | None
    score_std: float | None
    score_n: int
    candidates: list[dict] = field(default_factory=list)
    test_mean: float | None = None
    test_std: float | None = None
    test_n: int = 0
    #: how many of the chosen setting's runs diverged (their accuracies are in test_mean, marked †)
    test_diverged: int = 0


def minimize_metric(metric: str) -> bool:
    """Whether a lower value of ``metric`` is better (losses)."""
    return "loss" in metric


def select_settings(
    rows: Sequence[Mapping[str, Any]],
    group_keys: Sequence[str],
    tune_keys: Sequence[str],
    score_key: str,
    minimize: bool = False,
) -> list[Choice]:
    """Per group (combination of ``group_keys``) the tune combination with the best mean score.

    ``rows`` should carry only factor labels and ``score_key``: the caller strips every
    test metric first, so the choice cannot look at the test set. Ties go to the
    first candidate in grid order.
    """
    by_group: dict[tuple, dict[tuple, list[float]]] = {}
    for r in rows:
        g = tuple(r[k] for k in group_keys)
        t = tuple(r[k] for k in tune_keys)
        by_group.setdefault(g, {}).setdefault(t, [])
        v = r.get(score_key)
        if v is not None and math.isfinite(float(v)):
            by_group[g][t].append(float(v))
    choices = []
    for g, cands in by_group.items():
        best = None
        cand_rows = []
        for t, vals in cands.items():
            m, sd, n = mean_std(vals)
            cand_rows.append({"tune": dict(zip(tune_keys, t)), "mean": m, "std": sd, "n": n})
            if m is None:
                continue
            if best is None or (m < best[1] if minimize else m > best[1]):
                best = (t, m, sd, n)
        if best is None:
            choices.append(Choice(dict(zip(group_keys, g)), None, None, None, 0, cand_rows))
        else:
            choices.append(
                Choice(dict(zip(group_keys, g)), dict(zip(tune_keys, best[0])), best[1], best[2], best[3], cand_rows)
            )
    return choices


def selection_outputs(
    choices: Sequence[Choice], spec: SweepSpec, metric: str, folds: int
) -> tuple[str, str, list[dict]]:
    """(selection.md's body, selection.csv's text, its rows) of the choices."""
    group_factors = [f for f in spec.factors if f.key not in spec.tune]
    tune_factors = [f for f in spec.factors if f.key in spec.tune]
    lines = _chosen_table(choices, group_factors, tune_factors, spec.seeds, metric, folds)
    lines += _candidates_table(choices, group_factors, tune_factors, metric, folds)
    csv_rows = [_csv_row(c, tune_factors, metric) for c in choices]
    return "\n".join(lines) + "\n", to_csv(csv_rows), csv_rows


def _chosen_table(
    choices: Sequence[Choice],
    group_factors: Sequence[Factor],
    tune_factors: Sequence[Factor],
    seeds: Sequence[int] | None,
    metric: str,
    folds: int,
) -> list[str]:
    """The caption and the table of the chosen settings: a row per group, its choice,
    validation score and test accuracy."""
    how = (
        f"{folds}-fold cross-validation on the training data (held-out-fold {metric.replace('val_', '', 1)})"
        if folds
        else f"validation metric {metric}"
    )
    lines = [
        f"Model selection: for each group the {', '.join(f.short for f in tune_factors)} setting with the best mean "
        f"{how} over {'seeds and folds' if folds else 'seeds'} was chosen without reading test metrics; test accuracy (%) of the chosen setting, "
        f"{std_note(seeds)}" + ("; the chosen setting was retrained on the full training data." if folds else "."),
        "",
    ]
    head = [f.short for f in group_factors] or ["group"]
    lines.append(
        md_row(
            head
            + [f"chosen {f.short}" for f in tune_factors]
            + [f"{'CV' if folds else 'validation'} score", "test acc (%)"]
        )
    )
    lines.append(md_row(["---"] * len(head) + ["---"] * len(tune_factors) + ["---:", "---:"]))
    for c in choices:
        gcells = [c.group[f.key] for f in group_factors] or ["all"]
        tcells = [c.chosen[f.key] if c.chosen else "–" for f in tune_factors]
        score = format_mean_std(c.score_mean, c.score_std, percent="accuracy" in metric)
        test = format_mean_std(c.test_mean, c.test_std) + (
            diverged_mark(c.test_diverged) if c.test_mean is not None else ""
        )
        lines.append(md_row(gcells + tcells + [score, test]))
    if any(c.test_diverged for c in choices):
        lines += ["", DAGGER_NOTE]
    return lines


def _candidates_table(
    choices: Sequence[Choice], group_factors: Sequence[Factor], tune_factors: Sequence[Factor], metric: str, folds: int
) -> list[str]:
    """Every candidate setting's validation score, the chosen one in bold."""
    lines = [
        "",
        f"Candidates (validation score, mean ± sample std over {'seeds and folds' if folds else 'seeds'}):",
        "",
    ]
    head = [f.short for f in group_factors] or ["group"]
    lines.append(md_row(head + [f.short for f in tune_factors] + ["score", "n"]))
    lines.append(md_row(["---"] * (len(head) + len(tune_factors)) + ["---:", "---:"]))
    for c in choices:
        gcells = [c.group[f.key] for f in group_factors] or ["all"]
        for cand in c.candidates:
            mark = "**" if c.chosen == cand["tune"] else ""
            score = format_mean_std(cand["mean"], cand["std"], percent="accuracy" in metric)
            lines.append(
                md_row(gcells + [cand["tune"][f.key] for f in tune_factors] + [f"{mark}{score}{mark}", str(cand["n"])])
            )
    return lines


def _csv_row(c: Choice, tune_factors: Sequence[Factor], metric: str) -> dict[str, Any]:
    """A choice's row of selection.csv."""
    return {
        **c.group,
        **{f"chosen {f.key}": (c.chosen or {}).get(f.key) for f in tune_factors},
        "score_metric": metric,
        "score_mean": c.score_mean,
        "score_std": c.score_std,
        "score_n": c.score_n,
        "test_accuracy_mean": c.test_mean,
        "test_accuracy_std": c.test_std,
        "test_n": c.test_n,
        "test_diverged": c.test_diverged,
    }
