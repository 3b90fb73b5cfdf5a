"""Fairness over the parties: the sweep table of how the global model's accuracy spreads
over the parties' own test data (``eval.local_test``).

One row per combination of the sweep's factors: the accuracy pooled over the parties'
test samples, the standard deviation of the per-party accuracies (in points), the mean
of the worst and of the best 10% of parties, the worst party's and Jain's fairness index
(sum a)^2 / (n sum a^2) (1: every party alike), each mean ± sample std over seeds, from
summary.json's ``local_test_accuracy*`` (the last per-party evaluation). The q-FFL paper's
measure is the variance (here its square root) of the per-party accuracy; AFL's is the
worst party's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedsim.sweeps.spec import Factor
from fedsim.sweeps.tables import _group, _ordered_combos, dagger, has_result, md_row, mean_std, std_note
from fedsim.util.formatting import format_mean_std

#: (summary key, header, in percent)
FAIRNESS_COLUMNS = (
    ("local_test_accuracy", "acc (%)", True),
    ("local_test_accuracy_std", "std over parties (pts)", True),
    ("local_test_accuracy_worst10", "worst 10% (%)", True),
    ("local_test_accuracy_best10", "best 10% (%)", True),
    ("local_test_accuracy_worst", "worst party (%)", True),
    ("local_test_accuracy_jain", "Jain's index", False),
)


def fairness_table(
    rows: Sequence[Mapping[str, Any]], factors: Sequence[Factor], seeds: Sequence[int] | None = None
) -> str:
    """The Markdown table of the module docstring ("" when no run evaluated its parties)."""
    ok = [r for r in rows if has_result(r) and r.get("local_test_accuracy_std") is not None]
    if not ok:
        return ""
    groups = _group(ok, [f.key for f in factors])
    lines = [
        "The global model on the parties' own test data after the last round: accuracy pooled over their test "
        "samples, the spread of the per-party accuracies (std in points, worst and best 10% of parties, the worst "
        f"party) and Jain's index, {std_note(seeds)}.",
        "",
        md_row([" / ".join(f.short for f in factors) or "setting", *(h for _, h, _ in FAIRNESS_COLUMNS), "n"]),
        md_row(["---"] + ["---:"] * (len(FAIRNESS_COLUMNS) + 1)),
    ]
    for combo in _ordered_combos(factors) or [()]:
        members = groups.get(tuple(combo), [])
        if not members:
            continue
        cells = []
        for key, _, percent in FAIRNESS_COLUMNS:
            m, sd, _ = mean_std(r.get(key) for r in members)
            cells.append(format_mean_std(m, sd, percent=percent))
        lines.append(md_row([" / ".join(combo) or "all", *cells, f"{len(members)}{dagger(members)}"]))
    return "\n".join(lines) + "\n"
