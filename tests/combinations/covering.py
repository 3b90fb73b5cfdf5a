"""A pairwise covering array: rows of factor levels in which every pair of levels of
every two factors appears at least once (all pairs, not the full product).

Greedy and deterministic (AETG's idea, without its random candidates): each row starts
from the smallest pair not covered yet and fills the other factors, in order, with the
level that covers the most uncovered pairs with the levels already in the row (ties to
the first level). The rows number about max |A| x |B| over two factors, so 28
algorithms x 6 privacy modes need about 170 rows where the product of seven factors
needs tens of thousands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any


def pairwise(factors: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows (factor -> level) covering every pair of levels of every two factors."""
    names = list(factors)
    levels = [list(factors[n]) for n in names]
    uncovered = {
        ((i, a), (j, b))
        for i, j in combinations(range(len(names)), 2)
        for a in range(len(levels[i]))
        for b in range(len(levels[j]))
    }
    rows: list[dict[str, Any]] = []
    while uncovered:
        (i, a), (j, b) = min(uncovered)
        row = {i: a, j: b}
        for k in range(len(names)):
            if k in row:
                continue

            gains = [_gain(row, k, level, uncovered) for level in range(len(levels[k]))]
            row[k] = max(range(len(levels[k])), key=lambda level: (gains[level], -level))
        for p, q in combinations(sorted(row), 2):
            uncovered.discard(((p, row[p]), (q, row[q])))
        rows.append({names[k]: levels[k][v] for k, v in sorted(row.items())})
    return rows


def _gain(row: dict[int, int], k: int, level: int, uncovered: set) -> int:
    """The uncovered pairs that ``level`` of factor ``k`` would cover with ``row``'s levels."""
    return sum((((m, v), (k, level)) if m < k else ((k, level), (m, v))) in uncovered for m, v in row.items())


def covers_all_pairs(rows: Sequence[Mapping[str, Any]], factors: Mapping[str, Sequence[Any]]) -> bool:
    """Whether every pair of levels of every two factors is in some row."""
    for x, y in combinations(list(factors), 2):
        seen = {(r[x], r[y]) for r in rows}
        if any((a, b) not in seen for a in factors[x] for b in factors[y]):
            return False
    return True
