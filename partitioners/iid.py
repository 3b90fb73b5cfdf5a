"""IID partition: a uniformly random equal split (NIID-Bench's ``homo``)."""

from __future__ import annotations

import numpy as np

from ._assign import dataidxs_from_assignment, small_uint
from .registry import register


@register("iid", sorted_output=True)
def iid(labels: np.ndarray, n_parties: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """A random permutation cut into ``n_parties`` nearly equal parts
    (``np.array_split``: the first ``N mod n`` parties get one sample more)."""
    n_samples = labels.size
    sizes = np.full(n_parties, n_samples // n_parties, dtype=np.int64)
    sizes[: n_samples % n_parties] += 1
    dtype = small_uint(n_parties + 1)
    assign = np.empty(n_samples, dtype=dtype)
    assign[rng.permutation(n_samples)] = np.repeat(np.arange(n_parties, dtype=dtype), sizes)
    return dataidxs_from_assignment(assign, n_parties)
