"""Pathological non-IID shards (McMahan et al., "Communication-Efficient Learning of Deep
Networks from Decentralized Data", AISTATS 2017).

Samples are sorted by label (ties in random order), cut into ``n_parties *
shards_per_party`` equal shards of ``N // (n_parties * shards_per_party)`` samples, and
each party is dealt ``shards_per_party`` shards at random.
"""

from __future__ import annotations

import numpy as np

from ._assign import class_blocks, dataidxs_from_assignment, small_uint
from ._validate import as_int
from .registry import register


@register("shards", sorted_output=True)
def shards(
    labels: np.ndarray,
    n_parties: int,
    rng: np.random.Generator,
    *,
    shards_per_party: int = 2,
) -> dict[int, np.ndarray]:
    """Each party gets exactly ``shards_per_party * shard_size`` samples, made of its shards.

    The ``N mod (n_parties * shards_per_party)`` samples that do not fill a shard are
    left out, chosen at random before sorting (not the tail of the last class), so this
    scheme may leave up to ``n_parties * shards_per_party - 1`` samples unassigned.
    """
    n_samples = labels.size
    s = as_int("partition.shards_per_party", shards_per_party, 1, n_samples // n_parties,
               why=f" (n_parties * shards_per_party <= {n_samples} samples, n_parties={n_parties})")
    n_shards = n_parties * s
    shard_size = n_samples // n_shards
    kept = rng.permutation(n_samples)[: n_shards * shard_size]
    # stable sort of randomly ordered samples: label order, ties shuffled
    in_label_order = kept[class_blocks(labels[kept])]
    dtype = small_uint(n_parties + 1)
    owner = np.empty(n_shards, dtype=dtype)
    owner[rng.permutation(n_shards)] = np.repeat(np.arange(n_parties, dtype=dtype), s)
    assign = np.full(n_samples, n_parties, dtype=dtype)
    assign[in_label_order] = np.repeat(owner, shard_size)
    return dataidxs_from_assignment(assign, n_parties)
