"""Plain-text table of a partition's class counts (what ``fedsim partition`` prints)."""

from __future__ import annotations

from typing import Any

import numpy as np

_MAX_CLASS_COLS = 12


def format_class_counts(class_counts: Any, max_rows: int = 20) -> str:
    """A table with one row per party (``party``, ``size``, one column per class) and a
    ``total`` row.

    With more than ``max_rows`` parties, the first and last rows are shown around a
    ``...`` line; with more than 12 classes, the first 6 and last 6 class columns are
    shown around a ``...`` column (sizes and totals always count every class).
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    if counts.ndim != 2:
        raise ValueError(f"class_counts must be a parties x classes matrix; got shape {counts.shape}")
    n, k = counts.shape
    max_rows = max(2, int(max_rows))
    if k > _MAX_CLASS_COLS:
        half = _MAX_CLASS_COLS // 2
        cols: list[int | None] = [*range(half), None, *range(k - half, k)]
    else:
        cols = list(range(k))
    if n > max_rows:
        head = max_rows // 2
        rows: list[int | None] = [*range(head), None, *range(n - (max_rows - head), n)]
    else:
        rows = list(range(n))

    sizes = counts.sum(axis=1)
    totals = counts.sum(axis=0)
    header = ["party", "size"] + ["..." if c is None else str(c) for c in cols]
    body: list[list[str]] = []
    for r in rows:
        if r is None:
            body.append(["..."] * len(header))
            continue
        body.append([str(r), str(sizes[r])] + ["..." if c is None else str(counts[r, c]) for c in cols])
    body.append(["total", str(sizes.sum())] + ["..." if c is None else str(totals[c]) for c in cols])

    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [" ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in [header, *body]]
    rule = "-" * len(lines[0])
    return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])
