"""A million parties: partitions as one array and offsets instead of an array per party (the
same indices as before), partition.json without the per-party table above a limit, node maps
without an entry per party, Contexts kept only for parties with state."""

import json

import numpy as np
import pytest

import fedsim
import partitioners
from fedsim.prepare import preflight
from partitioners import FlatPartition
from partitioners.stats import class_count_matrix
from strategies.cohort import ConsecutiveNodes, invert


def test_a_flat_partition_reads_as_a_mapping_of_views():
    part = FlatPartition.from_sizes(np.arange(6, dtype=np.int64), np.array([2, 0, 4]))
    assert len(part) == 3 and list(part) == [0, 1, 2] and 2 in part and 3 not in part and "0" not in part
    assert part[0].tolist() == [0, 1] and part[1].size == 0 and part[np.int64(2)].tolist() == [2, 3, 4, 5]
    assert part.get(3) is None and partitioners.party_sizes(part).tolist() == [2, 0, 4]
    with pytest.raises(KeyError):
        part[-1]
    assert partitioners.party_sizes({1: np.arange(3), 0: np.arange(1)}).tolist() == [1, 3]


@pytest.mark.parametrize("n, parties", [(10, 3), (1000, 7), (600, 600), (12345, 100), (100, 1)])
def test_iid_gives_the_sorted_array_split_of_the_permutation(n, parties):
    labels = np.arange(n) % 10
    got = partitioners.partition(labels, "iid", parties, seed=3)
    want = np.array_split(np.random.default_rng(3).permutation(n), parties)
    assert isinstance(got, FlatPartition) and len(got) == parties
    assert all(got[j].dtype == np.int64 and np.array_equal(got[j], np.sort(want[j])) for j in range(parties))


def test_the_class_counts_of_a_flat_partition_equal_a_dicts():
    labels = np.random.default_rng(0).integers(0, 5, 3000)
    flat = partitioners.partition(labels, "dirichlet", 40, seed=1, beta=0.3, min_size=0)
    as_dict = {j: np.array(flat[j]) for j in flat}
    assert np.array_equal(class_count_matrix(labels, flat, 5)[1], class_count_matrix(labels, as_dict, 5)[1])
    assert partitioners.heterogeneity(labels, flat) == partitioners.heterogeneity(labels, as_dict)


def test_a_saved_flat_partition_reads_back_the_same(tmp_path):
    labels = np.arange(500) % 4
    part = partitioners.partition(labels, "iid", 30, seed=0)
    partitioners.save_dataidxs(tmp_path / "d.npz", part, labels, "iid", {}, 0)
    back = partitioners.load_dataidxs(tmp_path / "d.npz", labels)
    assert isinstance(back, FlatPartition) and all(np.array_equal(back[j], part[j]) for j in part)


def test_partition_json_lists_parties_up_to_the_limit_only(tmp_path, tiny, monkeypatch):
    cfg = fedsim.load_config(tiny(partition={"scheme": "iid", "n_parties": 4}, data={"feature_noise": 0.1}))
    labels = np.arange(400) % 4
    part = partitioners.partition(labels, "iid", 4, seed=0)
    (tmp_path / "a").mkdir()
    preflight.write_partition(tmp_path / "a", part, labels, 4, cfg, "x", None)
    listed = json.loads((tmp_path / "a" / "partition.json").read_text())
    assert len(listed["class_counts"]) == 4 and len(listed["noise_levels"]) == 4
    monkeypatch.setattr(preflight, "PER_PARTY_LIMIT", 3)
    (tmp_path / "b").mkdir()
    het = preflight.write_partition(tmp_path / "b", part, labels, 4, cfg, "x", tmp_path / "b" / "plot.png")
    left_out = json.loads((tmp_path / "b" / "partition.json").read_text())
    assert left_out["class_counts"] is None and left_out["noise_levels"] is None
    assert list(left_out) == list(listed)  # the same keys in the same order
    assert {k: v for k, v in left_out.items() if "counts" not in k and "noise" not in k} == {
        k: v for k, v in listed.items() if "counts" not in k and "noise" not in k
    }
    assert np.array_equal(het["class_counts"], listed["class_counts"]) and (tmp_path / "b" / "plot.png").exists()


def test_partition_json_leaves_the_local_test_sizes_out_above_the_limit(tmp_path, tiny, monkeypatch):
    from fedsim.inputs.localtest import LocalTest

    cfg = fedsim.load_config(tiny(partition={"scheme": "iid", "n_parties": 4}, eval={"local_test": "split"}))
    labels = np.arange(400) % 4
    train, test = partitioners.partition(labels, "iid", 4, seed=0), {j: np.arange(j + 1) for j in range(4)}
    monkeypatch.setattr(preflight, "PER_PARTY_LIMIT", 3)
    het = preflight.write_partition(tmp_path, train, labels, 4, cfg, "x", None, LocalTest(test, "test"))
    assert json.loads((tmp_path / "partition.json").read_text())["local_test"]["sizes"] is None
    assert het["local_test"]["sizes"] == [1, 2, 3, 4]  # for fedsim partition's summary line


def test_consecutive_nodes_map_parties_to_nodes_and_back():
    nodes = ConsecutiveNodes(5, to=1000)
    assert dict(nodes) == {p: 1000 + p for p in range(5)} and 5 not in nodes and True not in nodes
    parties = invert(nodes)
    assert dict(parties) == {1000 + p: p for p in range(5)} and 999 not in parties
    with pytest.raises(KeyError):
        nodes[5]
    assert invert({0: 7, 1: 9}) == {7: 0, 9: 1}


def test_the_local_grid_keeps_a_context_only_while_it_holds_state():
    from flwr.app import ArrayRecord, Message, RecordDict

    from fedsim.engine.local import NODE_BASE, LocalGrid
    from fedsim.util.flower_compat import set_task_identity

    class Executor:
        def run(self, jobs):
            for msg, ctx in jobs:
                if ctx.node_config["partition-id"] % 2:
                    ctx.state["kept"] = ArrayRecord()
                yield Message(RecordDict(), reply_to=msg)

    set_task_identity(1)
    grid = LocalGrid(Executor(), 1_000_000, {})
    msgs = [Message(RecordDict(), dst_node_id=NODE_BASE + p, message_type="train") for p in (3, 4, 999_999)]
    assert len(list(grid.pull_messages(grid.push_messages(msgs)))) == 3
    assert sorted(grid._contexts) == [NODE_BASE + 3, NODE_BASE + 999_999]
    assert grid.context(NODE_BASE + 3).state["kept"] is not None and len(grid.get_node_ids()) == 1_000_000


def test_the_label_plot_of_many_parties_draws_blocks_of_them(tmp_path):
    counts = np.random.default_rng(0).integers(0, 5, (20_001, 3))
    partitioners.plot_label_distribution(counts, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
