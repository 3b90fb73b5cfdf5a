"""The attacks x defences table of a sweep: clean test accuracy and attack success rate.

A sweep with an attack factor (``attack`` section or ``attack.name``) gets, per setting
of its other factors (the partition, ...), a table with the attacks as rows and the
defences as columns (the ``defence`` factor, else the strategy factor: Krum, the median
and Bulyan are algorithms), each cell ``clean accuracy / success rate`` in %, mean ±
sample std (ddof=1) over seeds, as :mod:`.tables` computes them. The success rate is
shown for attacks that have a target (backdoor, label flip); ``–`` elsewhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from fedsim.sweeps.spec import STRATEGY_FACTORS, Factor
from fedsim.sweeps.tables import (
    DAGGER_NOTE,
    dagger,
    format_mean_std,
    has_result,
    is_diverged,
    md_row,
    mean_std,
    std_note,
)

ATTACK_FACTORS = ("attack", "attack.name")
DEFENCE_FACTORS = ("defence", "defence.name")


def attack_table(
    rows: Sequence[Mapping[str, Any]], factors: Sequence[Factor], seeds: Sequence[int] | None = None
) -> str | None:
    """The Markdown tables of attacks x defences (module docstring), or None without an attack factor."""
    atk = next((f for f in factors if f.key in ATTACK_FACTORS), None)
    if atk is None:
        return None
    col = next((f for f in factors if f.key in DEFENCE_FACTORS), None) or next(
        (f for f in factors if f.key in STRATEGY_FACTORS), None
    )
    panels = [f for f in factors if f is not atk and f is not col]
    ok = [r for r in rows if has_result(r)]
    expected = len(seeds) if seeds else None
    lines = [
        f"Clean test accuracy / attack success rate (%) after the last round, {std_note(seeds)}; "
        "rows: attacks, columns: defences. The success rate is the share of triggered test images of the other "
        "classes classified as the target (backdoor) or of source-class test images predicted as the target "
        "(label flip); – for attacks without a target.",
        "",
    ]
    col_labels = col.labels if col is not None else ["all"]
    for combo in itertools.product(*[f.labels for f in panels]) or [()]:
        if panels:
            lines += [f"**{' / '.join(f'{f.short} {v}' for f, v in zip(panels, combo))}**", ""]
        lines.append(md_row([atk.short] + list(col_labels)))
        lines.append(md_row(["---"] + ["---:"] * len(col_labels)))
        for a in atk.labels:
            cells = []
            for c in col_labels:
                members = [
                    r
                    for r in ok
                    if r.get(atk.key) == a
                    and (col is None or r.get(col.key) == c)
                    and all(r.get(f.key) == v for f, v in zip(panels, combo))
                ]
                acc_m, acc_s, n = mean_std(r.get("test_accuracy") for r in members)
                asr_m, asr_s, _ = mean_std(r.get("attack_success_rate") for r in members)
                text = f"{format_mean_std(acc_m, acc_s)} / {format_mean_std(asr_m, asr_s)}"
                if acc_m is not None and expected is not None and n < expected:
                    text += f" (n={n})"
                cells.append(text + (dagger(members) if acc_m is not None else ""))
            lines.append(md_row([a] + cells))
        lines.append("")
    if any(is_diverged(r) for r in ok):
        lines.append(DAGGER_NOTE)
    return "\n".join(lines).rstrip() + "\n"
