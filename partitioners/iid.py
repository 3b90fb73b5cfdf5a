"""IID partition: a uniformly random equal split (NIID-Bench's ``homo``, Li et al., ICDE 2022)."""

from __future__ import annotations

import numpy as np

from .registry import register


@register("iid", sorted_output=True, uses_labels=False, summary="equal random split", paper="-")
def iid(labels: np.ndarray, n_parties: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """A random permutation cut into ``n_parties`` nearly equal parts
    (``np.array_split``: the first ``N mod n`` parties get one sample more)."""
    parts = np.array_split(rng.permutation(labels.size), n_parties)
    return {j: np.sort(part) for j, part in enumerate(parts)}
