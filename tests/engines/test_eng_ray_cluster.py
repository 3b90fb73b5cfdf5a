"""A real Ray cluster of two nodes on this machine (``ray start --head``, then ``ray start
--address`` with resources of its own): the clients run on both nodes (read from Ray's
actor table, not assumed), the weights are the local engine's, and a node lost in the
middle of a run is one client failure that the run records and survives. Slow (a
cluster starts in ~10 s and each run starts its actors)."""

import json
import os
import signal
import threading

import pytest
import torch
from ray_cluster import start_cluster

import fedsim
from fedsim.server.app import RunHooks

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture
def cluster():
    started = start_cluster()
    try:
        yield started
    finally:
        started.stop()
        assert started.pids() == [], "a Ray process of the test's cluster is still running"


def placement() -> dict[str, list[str]]:
    """The custom resource of each node (``fedsim_head``, ``fedsim_node2``) -> the states of
    the ClientApp actors placed on it, from Ray's GCS tables (its state API without the
    dashboard, which the flwr[simulation] install leaves out)."""
    import ray
    from ray._private import state

    label = {n["NodeID"]: next(r for r in n["Resources"] if r.startswith("fedsim_")) for n in ray.nodes()}
    out: dict[str, list[str]] = {}
    for actor in state.actors().values():
        if actor["ActorClassName"] == "ClientAppActor":
            out.setdefault(label[actor["Address"]["NodeID"]], []).append(actor["State"])
    return out


def _weights(run):
    return torch.load(run.run_dir / "model.pt", weights_only=True)


def test_the_clients_run_on_both_nodes_and_give_the_local_engines_weights(cluster, tmp_path, tiny):
    def cfg(**engine):
        return tiny(federation={"rounds": 2, "fraction_fit": 1.0}, engine=engine)

    seen = []
    local = fedsim.run(cfg(), out=tmp_path / "local")
    on_cluster = fedsim.run(
        cfg(name="ray", ray_address=cluster.address),
        out=tmp_path / "ray",
        hooks=RunHooks(on_round=lambda row: seen.append(placement())),
    )
    # one actor a node (one CPU each, engine.num_cpus 1), alive in every round
    assert seen == [{"fedsim_head": ["ALIVE"], "fedsim_node2": ["ALIVE"]}] * 2
    a, b = _weights(local), _weights(on_cluster)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_node_lost_in_a_round_is_a_client_failure_the_run_survives(cluster, tmp_path, tiny):
    cfg = tiny(
        data={"n_train": 2000},
        federation={"rounds": 4, "fraction_fit": 1.0},
        # ~1.5 s a client (two a round on each node): the kill, 0.5 s after round 2 ends,
        # lands inside round 3's first job on the second node (with ~0.5 s jobs it could
        # land between two jobs, or after the run, and nothing failed: a flaky test)
        train={"epochs": 36},
        engine={"name": "ray", "ray_address": cluster.address},
    )

    def kill_the_second_node(row):
        if row["round"] != 2:
            return
        import ray

        (node,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "fedsim_node2" in n["Resources"]]
        raylet = cluster.raylet_pid(node)
        threading.Timer(0.5, os.kill, (raylet, signal.SIGKILL)).start()

    run = fedsim.run(cfg, out=tmp_path / "run", hooks=RunHooks(on_round=kill_the_second_node))
    rows = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    failures = [(r["round"], f) for r in rows for f in r["failures"]]
    # the job the lost node's actor held fails; the other actor serves the rest of the run
    assert len(failures) == 1 and failures[0][0] >= 3, failures
    assert "ray.exceptions" in failures[0][1]["reason"]
    assert [r["clients"] for r in rows] == [4, 4, *(4 - (r["round"] == failures[0][0]) for r in rows[2:])]
    failed = [json.loads(line) for line in (run.run_dir / "clients.jsonl").read_text().splitlines()]
    assert [(c["round"], c["party"]) for c in failed if c["status"] == "failed"] == [
        (failures[0][0], failures[0][1]["party"])
    ]
