"""Pathological non-IID shards (McMahan et al., "Communication-Efficient Learning of Deep
Networks from Decentralized Data", AISTATS 2017).

Samples are sorted by label (ties in random order), cut into ``n_parties *
shards_per_party`` equal shards of ``N // (n_parties * shards_per_party)`` samples, and
each party is dealt ``shards_per_party`` shards at random.
"""

from __future__ import annotations

import numpy as np

from ._validate import as_int
from .registry import register


@register(
    "shards",
    sorted_output=True,
    summary="sort by label, cut into equal shards, deal shards_per_party to each party",
    paper="McMahan et al. 2017, Communication-Efficient Learning of Deep Networks from Decentralized Data",
)
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
    s = as_int(
        "partition.shards_per_party",
        shards_per_party,
        1,
        n_samples // n_parties,
        why=f" (n_parties * shards_per_party <= {n_samples} samples, n_parties={n_parties})",
    )
    n_shards = n_parties * s
    shard_size = n_samples // n_shards
    kept = rng.permutation(n_samples)[: n_shards * shard_size]
    # a stable sort of randomly ordered samples: label order, ties in random order
    in_label_order = kept[np.argsort(labels[kept], kind="stable")]
    shard_ids = in_label_order.reshape(n_shards, shard_size)
    # party j gets shards dealt[j]: a random permutation of the shards, s at a time
    dealt = rng.permutation(n_shards).reshape(n_parties, s)
    return {j: np.sort(shard_ids[dealt[j]].ravel()) for j in range(n_parties)}
