"""Communication against accuracy: the sweep table of every setting's bytes.

One row per combination of the sweep's factors: the final test accuracy (%), the MB
uploaded and downloaded over the run (``bytes_up_total``, ``bytes_down_total`` of
summary.json, 10^6 bytes a MB) and the accuracy per MB sent (test accuracy in %
divided by the MB up and down together), each mean ± sample std over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedsim.sweeps.spec import Factor
from fedsim.sweeps.tables import _group, _ordered_combos, has_result, md_row, mean_std, std_note
from fedsim.util.formatting import format_mean_std

MB = 1e6


def per_mb(row: Mapping[str, Any]) -> float | None:
    """Test accuracy (%) per MB sent up and down, or None without the numbers."""
    acc, up, down = row.get("test_accuracy"), row.get("bytes_up_total"), row.get("bytes_down_total")
    if acc is None or up is None or down is None or float(up) + float(down) <= 0:
        return None
    return 100 * float(acc) / ((float(up) + float(down)) / MB)


def comm_table(rows: Sequence[Mapping[str, Any]], factors: Sequence[Factor], seeds: Sequence[int] | None = None) -> str:
    """The Markdown table of the module docstring ("" when no run has its bytes)."""
    ok = [r for r in rows if has_result(r) and r.get("bytes_up_total") is not None]
    if not ok:
        return ""
    groups = _group(ok, [f.key for f in factors])
    lines = [
        f"Test accuracy, MB sent and accuracy per MB (up + down) after the last round, {std_note(seeds)}.",
        "",
        md_row(
            [
                " / ".join(f.short for f in factors) or "setting",
                "test acc (%)",
                "upload MB",
                "download MB",
                "acc (%) / MB",
                "n",
            ]
        ),
        md_row(["---"] + ["---:"] * 5),
    ]
    for combo in _ordered_combos(factors) or [()]:
        members = groups.get(tuple(combo), [])
        if not members:
            continue
        cells = [format_mean_std(*mean_std(r.get("test_accuracy") for r in members)[:2])]
        for key in ("bytes_up_total", "bytes_down_total"):
            m, sd, _ = mean_std(None if r.get(key) is None else float(r[key]) / MB for r in members)
            cells.append(format_mean_std(m, sd, percent=False, digits=3))
        m, sd, _ = mean_std(per_mb(r) for r in members)
        cells.append(format_mean_std(m, sd, percent=False, digits=3))
        lines.append(md_row([" / ".join(combo) or "all", *cells, str(len(members))]))
    return "\n".join(lines) + "\n"
