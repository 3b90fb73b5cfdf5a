"""IID partition: a uniformly random equal split (NIID-Bench's ``homo``)."""

from __future__ import annotations

import numpy as np

from ._assign import random_split
from .registry import register


@register("iid", sorted_output=True)
def iid(labels: np.ndarray, n_parties: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """A random permutation cut into ``n_parties`` nearly equal parts
    (``np.array_split``: the first ``N mod n`` parties get one sample more)."""
    n_samples = labels.size
    sizes = np.full(n_parties, n_samples // n_parties, dtype=np.int64)
    sizes[: n_samples % n_parties] += 1
    return random_split(n_samples, sizes, rng)
