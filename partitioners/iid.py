"""IID partition: a uniformly random equal split (NIID-Bench's ``homo``, Li et al., ICDE 2022)."""

from __future__ import annotations

import numpy as np

from .io import FlatPartition
from .registry import register


@register("iid", sorted_output=True, uses_labels=False, summary="equal random split", paper="-")
def iid(labels: np.ndarray, n_parties: int, rng: np.random.Generator) -> FlatPartition:
    """A random permutation cut into ``n_parties`` nearly equal parts
    (``np.array_split``: the first ``N mod n`` parties get one sample more), each sorted."""
    perm = rng.permutation(labels.size)
    q, r = divmod(labels.size, n_parties)
    # the parts as the rows of two matrices, sorted row by row in one call each:
    # 1M parts took 8.3 s one np.sort at a time (benchmarks/scale.py), 0.3 s so
    cut = r * (q + 1)
    rows = (np.sort(perm[:cut].reshape(r, q + 1), axis=1), np.sort(perm[cut:].reshape(n_parties - r, q), axis=1))
    sizes = np.full(n_parties, q, dtype=np.int64)
    sizes[:r] += 1
    return FlatPartition.from_sizes(np.concatenate([m.ravel() for m in rows]), sizes)
