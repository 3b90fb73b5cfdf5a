"""flwr-datasets (Flower Datasets) partitioners, both ways.

- Scheme ``flwr``: any flwr-datasets ``Partitioner`` of samples (``DirichletPartitioner``,
  ``PathologicalPartitioner``, ``ShardPartitioner``, ``IidPartitioner``,
  ``NaturalIdPartitioner``, ...) applied to fedsim's labels, so a paper's flwr-datasets
  split is reproduced split for split. The labels become the column ``label`` (and the
  natural groups, where the dataset has them, the column ``group``) of a
  ``datasets.Dataset`` in the same row order, the partitioner is built with
  ``num_partitions = n_parties``, ``seed = seed`` and ``partition_by = "label"`` unless
  ``flwr_args`` says otherwise, and party j is the rows of its partition j. Same labels
  and seed: the same split as calling flwr-datasets directly.
- :func:`to_flwr`: fedsim's dataidxs as a flwr-datasets ``Partitioner`` over any
  ``datasets.Dataset`` of the same rows (``FederatedDataset(..., partitioners={"train":
  to_flwr(dataidxs)})``), so a Flower app trains on fedsim's partitions and can quote
  fedsim's heterogeneity statistics for them.

Both need the optional extra (``pip install 'fedsim[hf]'``); they import it when
called, so ``partitioners`` itself stays pure numpy.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsim.schema.sections import PartitionConfig
from fedsim.util.params import hp

from ._validate import as_int
from .registry import register

PIP_HINT = "pip install 'fedsim[hf]'"
INDEX = "__fedsim_index__"  # row ids carried through the partitioner
LABEL = "label"
GROUP = "group"
# constructor arguments that come from fedsim's own settings
_FROM_FEDSIM = {"num_partitions": "partition.n_parties", "seed": "seed"}


class MissingExtraError(ImportError, ValueError):
    """The optional extra is not installed (a ValueError too: the config layer reports it
    as one line, like every other partition error)."""


def _imports() -> tuple[Any, Any]:
    try:
        import datasets
        import flwr_datasets.partitioner as fp
    except ImportError as exc:
        raise MissingExtraError(
            f"flwr-datasets partitioners need flwr-datasets and datasets: {PIP_HINT} ({exc})"
        ) from exc
    return datasets, fp


def flwr_partitioners() -> list[str]:
    """The flwr-datasets partitioners of samples (vertical, feature-splitting ones excluded)."""
    _, fp = _imports()
    return sorted(
        n
        for n in fp.__all__
        if n != "Partitioner"
        and not n.startswith("Vertical")
        and isinstance(getattr(fp, n), type)
        and issubclass(getattr(fp, n), fp.Partitioner)
    )


def _constructor_args(name: str, cls: type, args: Mapping[str, Any], n_parties: int, seed: int) -> dict[str, Any]:
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    taken = sorted(set(args) & set(_FROM_FEDSIM))
    if taken:
        raise ValueError(
            f"partition.flwr_args must not set {', '.join(taken)}: {', '.join(_FROM_FEDSIM[t] for t in taken)} sets it"
        )
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise ValueError(
            f"{name} takes no argument {', '.join(unknown)} (partition.flwr_args); it takes: "
            f"{', '.join(a for a in accepted if a not in _FROM_FEDSIM)}"
        )
    kwargs = dict(args)
    if "num_partitions" in accepted:
        kwargs["num_partitions"] = n_parties
    if "seed" in accepted:
        kwargs["seed"] = seed
    if "partition_by" in accepted:
        kwargs.setdefault("partition_by", LABEL)
    return kwargs


def from_flwr(partitioner: Any, labels: Any, groups: Any = None) -> dict[int, np.ndarray]:
    """``{party: row indices}`` of a flwr-datasets ``partitioner`` (not yet given a dataset)
    applied to ``labels``: the dataset it partitions has the columns ``label`` (and
    ``group`` when ``groups`` is given) in the labels' row order. ValueError (one line)
    when the partitioner refuses or its partitions overlap."""
    columns: dict[str, Any] = {LABEL: np.asarray(labels), INDEX: np.arange(len(labels), dtype=np.int64)}
    if groups is not None:
        columns[GROUP] = np.asarray(groups)
    name = type(partitioner).__name__
    by = getattr(partitioner, "_partition_by", None)
    if isinstance(by, str) and by not in columns:
        raise ValueError(
            f"partition.flwr_args.partition_by = {by!r}: the columns are {', '.join(c for c in columns if c != INDEX)}"
        )
    datasets, _ = _imports()
    try:
        partitioner.dataset = datasets.Dataset.from_dict(columns)
        out = {
            j: np.asarray(partitioner.load_partition(j)[INDEX], dtype=np.int64)
            for j in range(partitioner.num_partitions)
        }
    except (ValueError, TypeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"flwr: {name}: {first}") from None
    total = sum(a.size for a in out.values())
    if total and np.unique(np.concatenate(list(out.values()))).size != total:
        raise ValueError(f"flwr: {name} gave overlapping partitions; fedsim's parties must be disjoint")
    return out


def flwr_dataidxs(
    labels: np.ndarray, n_parties: int, partitioner: str, args: Mapping[str, Any] | None, seed: int, groups: Any = None
) -> dict[int, np.ndarray]:
    """``{party: row indices}`` of the flwr-datasets class ``partitioner`` built with ``args``."""
    _, fp = _imports()
    allowed = flwr_partitioners()
    if partitioner not in allowed:
        raise ValueError(f"partition.flwr_partitioner must be one of {', '.join(allowed)}; got {partitioner!r}")
    cls = getattr(fp, partitioner)
    kwargs = _constructor_args(partitioner, cls, dict(args or {}), n_parties, seed)
    try:
        part = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"flwr: {partitioner}: {first}") from None
    out = from_flwr(part, labels, groups)
    if len(out) != n_parties:
        raise ValueError(f"flwr: {partitioner} made {len(out)} partitions; set partition.n_parties: {len(out)}")
    return out


@dataclass
class FlwrParams(PartitionConfig):
    """``partition.*`` with ``flwr``: the common keys and the flwr-datasets partitioner."""

    flwr_partitioner: str | None = hp(
        None,
        help="a flwr-datasets partitioner class: DirichletPartitioner, PathologicalPartitioner, ShardPartitioner, ...",
        source="required",
        text="a flwr-datasets partitioner class",
    )
    flwr_args: dict[str, Any] = hp(
        {},
        help="the partitioner's constructor arguments; num_partitions and seed come from partition.n_parties and seed",
        source="the partitioner's own defaults",
        text="a mapping",
    )


def _check_flwr(cfg: Any) -> str | None:
    if not cfg.partition.flwr_partitioner:
        return (
            "partition.scheme 'flwr' needs partition.flwr_partitioner: a flwr-datasets partitioner "
            "class, e.g. DirichletPartitioner, PathologicalPartitioner, ShardPartitioner"
        )
    return None


@register(
    "flwr",
    takes_seed=True,
    check=_check_flwr,
    summary="a flwr-datasets partitioner on the labels (natural groups as column group), seeded with seed",
    paper="Flower Datasets (flwr-datasets); pip install 'fedsim[hf]'",
    Params=FlwrParams,
)
def flwr(
    labels: np.ndarray,
    n_parties: int,
    rng: np.random.Generator,
    *,
    flwr_partitioner: str,
    flwr_args: Mapping[str, Any] | None = None,
    groups: Any = None,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """The split of flwr-datasets' ``flwr_partitioner(**flwr_args)`` (see the module doc).

    ``seed`` is the run's seed, given to the partitioner as its own ``seed`` (flwr-datasets
    draws from ``np.random.default_rng(seed)``); ``rng`` is not used. Samples a
    partitioner leaves out stay unassigned.
    """
    if not isinstance(flwr_partitioner, str) or not flwr_partitioner:
        raise ValueError("partition.flwr_partitioner must name a flwr-datasets partitioner, e.g. DirichletPartitioner")
    if flwr_args is not None and not isinstance(flwr_args, Mapping):
        raise ValueError(f"partition.flwr_args must be a mapping of argument names to values; got {flwr_args!r}")
    return flwr_dataidxs(labels, n_parties, flwr_partitioner, flwr_args, seed, groups)


@functools.cache
def _dataidxs_partitioner() -> type:
    _, fp = _imports()

    class DataidxsPartitioner(fp.Partitioner):
        """A flwr-datasets Partitioner whose partition j is the rows ``dataidxs[j]``."""

        def __init__(self, dataidxs: Mapping[int, Any]) -> None:
            super().__init__()
            n = len(dataidxs)
            if sorted(dataidxs) != list(range(n)):
                raise ValueError(f"dataidxs keys must be the party ids 0..{n - 1}")
            self._rows = [np.asarray(dataidxs[j], dtype=np.int64).reshape(-1) for j in range(n)]

        @property
        def num_partitions(self) -> int:
            return len(self._rows)

        def load_partition(self, partition_id: int) -> Any:
            j = as_int("partition_id", partition_id, 0, len(self._rows) - 1)
            rows = self._rows[j]
            if rows.size and rows.max() >= len(self.dataset):
                raise ValueError(
                    f"partition {j} holds row {int(rows.max())}, but the dataset has "
                    f"{len(self.dataset)} rows: use the dataset the partition was made for"
                )
            return self.dataset.select(rows)

    return DataidxsPartitioner


def to_flwr(dataidxs: Mapping[int, Any], dataset: Any = None) -> Any:
    """fedsim's ``dataidxs`` as a flwr-datasets ``Partitioner`` (partition j = rows
    ``dataidxs[j]``, in that order), over ``dataset`` if given (else assign
    ``partitioner.dataset`` later, or let ``FederatedDataset`` do it)."""
    part = _dataidxs_partitioner()(dataidxs)
    if dataset is not None:
        part.dataset = dataset
    return part
