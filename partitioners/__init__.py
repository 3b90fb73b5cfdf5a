"""Partition schemes for federated learning on non-IID data: labels -> dataidxs.

``partition(labels, scheme, n_parties, seed, **params)`` returns ``{party: indices}``
for parties 0..n_parties-1, each an int64 array of sample indices **sorted ascending**;
parties never share an index. Schemes (NIID-Bench, Li et al., ICDE 2022, and McMahan
et al., AISTATS 2017): ``iid``, ``dirichlet``, ``label-quantity``, ``shards``,
``quantity-skew``, ``natural``, and ``flwr`` (any flwr-datasets partitioner; the optional
extra). Every scheme assigns every sample except ``label-quantity`` (classes no party
holds), ``shards`` (the remainder that does not fill a shard) and the flwr-datasets
partitioners that leave samples out. ``import partitioners`` is pure numpy: no fedsim, torch or flwr import. The schemes
are plug-ins of fedsim's one plug-in mechanism (``partitioners.registry``, built on the
standard-library-only :mod:`fedsim.util.plugins`): that module and the schemes' files
are imported on first use of the names that need them (PEP 562), and flwr-datasets
only inside the ``flwr`` scheme and :func:`to_flwr`, when called.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._validate import as_int, check_labels
from .feature_noise import noise_levels
from .io import (
    FlatPartition,
    PartitionFileError,
    load_dataidxs,
    load_local_test,
    party_sizes,
    read_dataidxs_meta,
    save_dataidxs,
)
from .plot import plot_label_distribution
from .stats import heterogeneity
from .table import format_class_counts

#: names whose modules build on the plug-in registry (and so import fedsim.util): loaded
#: on first use, so that `import partitioners` stays numpy-only
_LAZY = {
    **dict.fromkeys(
        ("SCHEMES", "Scheme", "available", "get_scheme", "partition", "promises_sorted", "register"), "registry"
    ),
    **dict.fromkeys(("partition_params", "required_params", "scheme_params", "takes_seed", "unregister"), "registry"),
    **dict.fromkeys(("MissingExtraError", "from_flwr", "to_flwr"), "flower"),
    "group_test_indices": "natural",
    **{m: m for m in ("registry", "flower", "natural")},
}

__all__ = [
    "FlatPartition",
    "MissingExtraError",
    "PartitionFileError",
    "as_int",
    "available",
    "check_labels",
    "format_class_counts",
    "from_flwr",
    "group_test_indices",
    "heterogeneity",
    "load_dataidxs",
    "load_local_test",
    "noise_levels",
    "partition",
    "party_sizes",
    "plot_label_distribution",
    "read_dataidxs_meta",
    "register",
    "save_dataidxs",
    "scheme_params",
    "to_flwr",
]


def __getattr__(name: str) -> Any:
    # PEP 562: the registry's names load their module on first use (see _LAZY), so that
    # `import partitioners` imports no fedsim (tests/partitioning checks it). This is the
    # package's one deliberate deferred import of its own modules (docs/architecture.md)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'partitioners' has no attribute {name!r}")
    loaded = importlib.import_module(f"{__name__}.{module}")
    return loaded if module == name else getattr(loaded, name)
