"""Natural partition: whole groups (a writer in FEMNIST, a user in Shakespeare/Sent140 —
LEAF, Caldas et al. 2018) are dealt to parties."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .registry import register
from .split import by_owner


@register(
    "natural",
    sorted_output=True,
    uses_labels=False,
    summary="whole natural groups (writers, users) dealt round-robin to the parties from the seed",
    paper="LEAF (Caldas et al. 2018)",
)
def natural(
    labels: np.ndarray,
    n_parties: int,
    rng: np.random.Generator,
    *,
    groups: Any,
) -> dict[int, np.ndarray]:
    """``groups`` holds one group id (int or str) per sample; every sample is assigned.

    The distinct groups are shuffled with ``rng`` and dealt round-robin: party j gets
    shuffled groups j, j + n, j + 2n, ... . Parties thus hold whole groups and equal
    numbers of groups (within one), while their sizes keep the groups' natural
    imbalance (no balancing by size). With as many groups as parties each party is
    exactly one group. ValueError if there are fewer groups than parties.
    """
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != labels.size:
        raise ValueError(
            f"partition.groups must hold one group id per sample ({labels.size} values); got shape {g.shape}"
        )
    try:
        _, inverse = np.unique(g, return_inverse=True)
    except TypeError as e:
        raise ValueError(f"partition.groups must be sortable group ids (ints or strings): {e}") from None
    inverse = inverse.reshape(-1)
    n_groups = int(inverse.max()) + 1
    if n_groups < n_parties:
        raise ValueError(
            f"natural: {n_groups} groups for {n_parties} parties: partition.n_parties must be <= "
            f"the number of groups ({n_groups})"
        )
    # the shuffled groups dealt round-robin: the group at position i goes to party i mod n
    party_of_group = np.empty(n_groups, dtype=np.int64)
    party_of_group[rng.permutation(n_groups)] = np.arange(n_groups) % n_parties
    return by_owner(party_of_group[inverse], n_parties)


def group_test_indices(groups: Any, groups_test: Any, dataidxs: Mapping[int, Any]) -> dict[int, np.ndarray]:
    """Each party's own test samples under a natural partition: the test samples whose
    group (``groups_test``) is one of the groups of the party's training samples.

    With LEAF's per-user train/test split this is each party's users' own test data,
    the local test set of personalised FL. Returns sorted int64 indices into the test
    set; disjoint across parties when the partition deals whole groups (``natural``).
    """
    g = np.asarray(groups).reshape(-1)
    gt = np.asarray(groups_test).reshape(-1)
    out = {}
    for j, idx in dataidxs.items():
        own = np.unique(g[np.asarray(idx, dtype=np.int64)])
        out[j] = np.flatnonzero(np.isin(gt, own)).astype(np.int64)
    return out
