"""Partition schemes for federated learning on non-IID data: labels -> dataidxs.

``partition(labels, scheme, n_parties, seed, **params)`` returns ``{party: indices}``
for parties 0..n_parties-1, each an int64 array of sample indices **sorted ascending**;
parties never share an index. Schemes (NIID-Bench, Li et al., ICDE 2022, and McMahan
et al., AISTATS 2017): ``iid``, ``dirichlet``, ``label-quantity``, ``shards``,
``quantity-skew``, ``natural``, and ``flwr`` (any flwr-datasets partitioner; the optional
extra). Every scheme assigns every sample except ``label-quantity`` (classes no party
holds), ``shards`` (the remainder that does not fill a shard) and the flwr-datasets
partitioners that leave samples out. Pure numpy: no fedsim, torch or flwr import
(flwr-datasets only inside the ``flwr`` scheme and :func:`to_flwr`, when called).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# one import per scheme registers it
from . import dirichlet as _dirichlet  # noqa: F401
from . import flower as _flower  # noqa: F401
from . import iid as _iid  # noqa: F401
from . import label_quantity as _label_quantity  # noqa: F401
from . import natural as _natural  # noqa: F401
from . import quantity_skew as _quantity_skew  # noqa: F401
from . import shards as _shards  # noqa: F401
from ._validate import as_int, check_labels
from .feature_noise import noise_levels
from .flower import MissingExtraError, from_flwr, to_flwr
from .io import PartitionFileError, load_dataidxs, load_local_test, read_dataidxs_meta, save_dataidxs
from .natural import group_test_indices
from .plot import plot_label_distribution
from .registry import available, get_scheme, promises_sorted, register, required_params, scheme_params, takes_seed
from .stats import heterogeneity
from .table import format_class_counts

__all__ = [
    "MissingExtraError",
    "PartitionFileError",
    "available",
    "format_class_counts",
    "from_flwr",
    "group_test_indices",
    "heterogeneity",
    "load_dataidxs",
    "load_local_test",
    "noise_levels",
    "partition",
    "plot_label_distribution",
    "read_dataidxs_meta",
    "register",
    "save_dataidxs",
    "scheme_params",
    "to_flwr",
]


def partition(labels: Any, scheme: str, n_parties: int, seed: int = 0, **params: Any) -> dict[int, np.ndarray]:
    """Split the samples of ``labels`` among ``n_parties`` parties with ``scheme``.

    ``labels``: 1-D non-negative integer class ids. ``params``: the scheme's parameters
    (``scheme_params(scheme)``). All randomness comes from
    ``np.random.default_rng(seed)``: the same inputs and seed give the same split.
    Returns ``{0: idx_0, ..., n-1: idx_{n-1}}``, int64 arrays sorted ascending (a party
    may be empty only where the scheme allows it, e.g. ``min_size=0``).
    Raises ValueError (one line, naming the parameter) on bad input.
    """
    fn = get_scheme(scheme)
    labels = check_labels(labels)
    n_parties = as_int("partition.n_parties", n_parties, 1, labels.size, why=f" (at most the {labels.size} samples)")
    seed = as_int("seed", seed, 0)
    accepted = scheme_params(scheme)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"partition scheme {scheme!r} does not take {', '.join('partition.' + u for u in unknown)}; "
            f"it accepts: {', '.join(accepted) or 'no parameters'}"
        )
    missing = [p for p in required_params(scheme) if p not in params]
    if missing:
        raise ValueError(f"partition scheme {scheme!r} needs {', '.join('partition.' + m for m in missing)}")

    if takes_seed(scheme):
        params = {**params, "seed": seed}
    out = fn(labels, n_parties, np.random.default_rng(seed), **params)

    parties = list(range(n_parties))
    in_order = list(out) == parties
    if not in_order and sorted(out) != parties:
        raise RuntimeError(f"partition scheme {scheme!r} returned party ids other than 0..{n_parties - 1}")
    if promises_sorted(scheme):
        return out if in_order else {j: out[j] for j in parties}
    return {j: np.sort(np.asarray(out[j]).astype(np.int64).reshape(-1)) for j in range(n_parties)}
