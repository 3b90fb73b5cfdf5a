"""flwr-datasets both ways: scheme flwr equals calling flwr-datasets directly; to_flwr round-trips."""

from __future__ import annotations

import numpy as np
import pytest

import partitioners

fp = pytest.importorskip("flwr_datasets.partitioner", reason="the hf extra is not installed (pip install 'fedsim[hf]')")
datasets = pytest.importorskip("datasets")

LABELS = np.random.default_rng(0).integers(0, 10, 2000)
# flwr-datasets warns about unused classes and redraws, pyarrow about a deprecated option
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]


def direct(partitioner) -> dict[int, np.ndarray]:
    """flwr-datasets' own split of LABELS: rows of each partition, via a row-id column."""
    partitioner.dataset = datasets.Dataset.from_dict({"label": LABELS, "row": np.arange(LABELS.size)})
    return {j: np.sort(np.asarray(partitioner.load_partition(j)["row"])) for j in range(partitioner.num_partitions)}


@pytest.mark.parametrize("seed", [0, 7])
def test_dirichlet_equals_flwr_datasets_with_the_same_seed(seed):
    ours = partitioners.partition(
        LABELS,
        "flwr",
        5,
        seed=seed,
        flwr_partitioner="DirichletPartitioner",
        flwr_args={"alpha": 0.5, "min_partition_size": 20},
    )
    theirs = direct(
        fp.DirichletPartitioner(num_partitions=5, partition_by="label", alpha=0.5, min_partition_size=20, seed=seed)
    )
    assert sorted(ours) == list(range(5))
    for j in range(5):
        assert np.array_equal(ours[j], theirs[j]), j
    assert sum(a.size for a in ours.values()) == LABELS.size  # Dirichlet assigns every sample
    other = partitioners.partition(
        LABELS,
        "flwr",
        5,
        seed=seed + 1,
        flwr_partitioner="DirichletPartitioner",
        flwr_args={"alpha": 0.5, "min_partition_size": 20},
    )
    assert not all(np.array_equal(ours[j], other[j]) for j in range(5))


def test_pathological_and_shard_equal_flwr_datasets():
    ours = partitioners.partition(
        LABELS,
        "flwr",
        4,
        seed=3,
        flwr_partitioner="PathologicalPartitioner",
        flwr_args={"num_classes_per_partition": 2},
    )
    theirs = direct(
        fp.PathologicalPartitioner(num_partitions=4, partition_by="label", num_classes_per_partition=2, seed=3)
    )
    assert all(np.array_equal(ours[j], theirs[j]) for j in range(4))
    assert all(len(np.unique(LABELS[ours[j]])) <= 2 for j in range(4))
    ours = partitioners.partition(
        LABELS, "flwr", 4, seed=3, flwr_partitioner="ShardPartitioner", flwr_args={"num_shards_per_partition": 3}
    )
    theirs = direct(fp.ShardPartitioner(num_partitions=4, partition_by="label", num_shards_per_partition=3, seed=3))
    assert all(np.array_equal(ours[j], theirs[j]) for j in range(4))


def test_natural_ids_through_the_group_column():
    groups = np.arange(LABELS.size) % 6
    out = partitioners.partition(
        LABELS,
        "flwr",
        6,
        seed=0,
        flwr_partitioner="NaturalIdPartitioner",
        flwr_args={"partition_by": "group"},
        groups=groups,
    )
    assert sorted(tuple(np.unique(groups[idx])) for idx in out.values()) == [(g,) for g in range(6)]
    with pytest.raises(ValueError, match="made 6 partitions; set partition.n_parties: 6"):
        partitioners.partition(
            LABELS,
            "flwr",
            4,
            flwr_partitioner="NaturalIdPartitioner",
            flwr_args={"partition_by": "group"},
            groups=groups,
        )


@pytest.mark.parametrize(
    "name, args, fragment",
    [
        ("Dirichlet", {}, "partition.flwr_partitioner must be one of .*DirichletPartitioner"),
        ("VerticalSizePartitioner", {}, "must be one of"),
        ("DirichletPartitioner", {"alpha": 0.5, "seed": 3}, "must not set seed: seed sets it"),
        ("DirichletPartitioner", {"alpha": 0.5, "num_partitions": 3}, "partition.n_parties sets it"),
        ("DirichletPartitioner", {"alpha": 0.5, "beta": 1}, "DirichletPartitioner takes no argument beta .*alpha"),
        ("DirichletPartitioner", {}, "flwr: DirichletPartitioner: .*alpha"),
        (
            "DirichletPartitioner",
            {"alpha": 0.5, "partition_by": "fine"},
            "partition_by = 'fine': the columns are label",
        ),
        ("DirichletPartitioner", {"alpha": 0.01, "min_partition_size": 500}, "flwr: DirichletPartitioner: "),
    ],
)
def test_bad_partitioner_settings_are_one_line_value_errors(name, args, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        partitioners.partition(LABELS, "flwr", 5, seed=0, flwr_partitioner=name, flwr_args=args)
    assert "\n" not in str(info.value)


def test_to_flwr_round_trips_a_fedsim_partition():
    dataidxs = partitioners.partition(LABELS, "dirichlet", 8, seed=2, beta=0.3)
    ds = datasets.Dataset.from_dict({"label": LABELS, "row": np.arange(LABELS.size)})
    part = partitioners.to_flwr(dataidxs, ds)
    assert isinstance(part, fp.Partitioner) and part.num_partitions == 8
    for j in range(8):
        p = part.load_partition(j)
        assert np.array_equal(np.asarray(p["row"]), dataidxs[j])
        assert np.array_equal(np.asarray(p["label"]), LABELS[dataidxs[j]])
    # ...and back: the partitioner (unassigned) applied to the labels gives the same dataidxs
    back = partitioners.from_flwr(partitioners.to_flwr(dataidxs), LABELS)
    assert all(np.array_equal(back[j], dataidxs[j]) for j in range(8))
    # fedsim's heterogeneity statistics of the partition a Flower app now uses
    het = partitioners.heterogeneity(LABELS, back, num_classes=10)
    assert het["n_samples"] == LABELS.size and het["n_parties"] == 8


def test_to_flwr_checks_its_input():
    with pytest.raises(ValueError, match="party ids 0..1"):
        partitioners.to_flwr({0: [1], 2: [3]})
    part = partitioners.to_flwr({0: [0, 1], 1: [5]}, datasets.Dataset.from_dict({"x": [0, 1, 2]}))
    with pytest.raises(ValueError, match="holds row 5, but the dataset has 3 rows"):
        part.load_partition(1)
