"""The Flower internals fedsim relies on (fedsim/util/flower_compat.py) are still there.

A failure here means a Flower upgrade changed one of them: read fedsim/util/flower_compat.py,
adapt the item named in the message, and nothing else in fedsim should need to change.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading

import flwr
import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as fs
from flwr.serverapp.strategy import Strategy

from fedsim.util import flower_compat as fc
from strategies.strategy import _from_portable, _to_portable

UPGRADE = "Flower {} changed {}: update fedsim/util/flower_compat.py"


def _msg() -> Message:
    fc.set_task_identity(3)
    return Message(RecordDict({"config": ConfigRecord({"x": 1})}), dst_node_id=1001, message_type="train")


def test_node_info_is_built_from_a_node_id():
    assert fc.NodeInfo(node_id=1234).node_id == 1234, UPGRADE.format(flwr.__version__, "NodeInfo")


def test_a_grid_can_give_a_message_its_id_and_replies_point_back_to_it():
    msg = _msg()
    fc.set_message_id(msg, "abc123")
    assert msg.metadata.message_id == "abc123", UPGRADE.format(
        flwr.__version__, "Message metadata's private _message_id"
    )
    reply = Message(RecordDict(), reply_to=msg)
    assert reply.metadata.reply_to_message_id == "abc123", UPGRADE.format(flwr.__version__, "reply_to_message_id")


def test_messages_read_the_task_identity():
    fc.set_task_identity(42)
    assert _msg().metadata.run_id == 3  # _msg sets 3
    fc.set_task_identity(42)
    m = Message(RecordDict(), dst_node_id=1001, message_type="train")
    assert m.metadata.run_id == 42, UPGRADE.format(flwr.__version__, "TaskIdentity (the run id a Message reads)")


def test_an_empty_run_and_the_constants():
    assert fc.empty_run(7).run_id == 7, UPGRADE.format(flwr.__version__, "Run.create_empty")
    assert fc.SUPERLINK_NODE_ID == 1 and hasattr(fc.ErrorCode, "CLIENT_APP_RAISED_EXCEPTION"), UPGRADE.format(
        flwr.__version__, "constants"
    )
    assert isinstance(fc.NUMPY_STYPE, str) and fc.NUMPY_STYPE, UPGRADE.format(flwr.__version__, "SType.NUMPY")


def test_quick_arrays_and_records_equal_flowers_own():
    nd = np.arange(6, dtype=np.float32).reshape(2, 3)
    ref = Array(nd)
    quick = fc.numpy_array(ref.dtype, ref.shape, ref.data)
    assert quick.__dict__ == ref.__dict__ and quick == ref, UPGRADE.format(flwr.__version__, "Array's fields")
    assert np.array_equal(quick.numpy(), nd) and quick.object_id == ref.object_id
    rec = fc.array_record([("w", quick)])
    assert rec == ArrayRecord({"w": ref}) and rec.object_id == ArrayRecord({"w": ref}).object_id, UPGRADE.format(
        flwr.__version__, "ArrayRecord's items"
    )
    metrics = {"num-examples": 10, "train_loss": 0.5}
    assert fc.metric_record(metrics) == MetricRecord(metrics), UPGRADE.format(flwr.__version__, "MetricRecord's items")
    records = {"arrays": rec, "metrics": fc.metric_record(metrics)}
    quick_rd, ref_rd = fc.record_dict(records), RecordDict(records)
    assert quick_rd == ref_rd and quick_rd.__dict__.keys() == ref_rd.__dict__.keys(), UPGRADE.format(
        flwr.__version__, "RecordDict's items"
    )
    assert quick_rd.array_records["arrays"] is rec and quick_rd.metric_records["metrics"] == MetricRecord(metrics)
    template = fc.kept_template(ref.dtype, ref.shape, ref.data[: len(ref.data) - nd.nbytes], len(ref.data))
    kept = fc.kept_array(template, torch.from_numpy(nd))
    assert kept == ref and fc.take_tensor(kept) is not None and fc.take_tensor(kept) is None
    assert fc.take_tensor(quick) is None  # a plain Array carries no tensor
    kept = fc.kept_array(template, torch.from_numpy(nd))
    kept.data = ref.data[:1] + ref.data[1:]  # new bytes: the kept tensor no longer describes them
    assert fc.take_tensor(kept) is None


def test_strategy_start_still_takes_what_fedsims_round_loop_mirrors():
    params = tuple(inspect.signature(Strategy.start).parameters)
    assert params == fc.STRATEGY_START_PARAMETERS, UPGRADE.format(
        flwr.__version__, f"Strategy.start's parameters to {params}"
    )


@pytest.mark.parametrize("name", ["configure_train", "aggregate_train", "configure_evaluate", "aggregate_evaluate"])
def test_the_strategy_methods_the_round_loop_calls(name):
    params = tuple(inspect.signature(getattr(Strategy, name)).parameters)
    expected = {
        "configure_train": ("self", "server_round", "arrays", "config", "grid"),
        "aggregate_train": ("self", "server_round", "replies"),
        "configure_evaluate": ("self", "server_round", "arrays", "config", "grid"),
        "aggregate_evaluate": ("self", "server_round", "replies"),
    }[name]
    assert params == expected, UPGRADE.format(flwr.__version__, f"Strategy.{name}'s parameters to {params}")


# ------------------------------------------------------------- server optimisers' state

#: Flower's server optimisers, hyperparameters that make every piece of state move, and
#: the state fedsim checkpoints for them
SERVER_OPTIMISERS = {
    "FedAvgM": (fs.FedAvgM, {"server_learning_rate": 0.5, "server_momentum": 0.9}, fc.FEDAVGM_STATE),
    "FedAdam": (fs.FedAdam, {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99}, fc.FEDOPT_STATE),
    "FedYogi": (fs.FedYogi, {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99}, fc.FEDOPT_STATE),
    "FedAdagrad": (fs.FedAdagrad, {"eta": 0.1}, fc.FEDOPT_STATE),
}
NODES = (1001, 1002)


class _Nodes:
    """All that Flower's ``configure_train`` asks of a Grid: the connected nodes."""

    def get_node_ids(self) -> list[int]:
        return list(NODES)


def _record(w: list[float]) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.asarray(w, dtype=np.float32))})


def _values(arrays) -> np.ndarray:
    """The single entry of an ArrayRecord or a dict of ndarrays."""
    value = arrays["w"]
    return value.numpy() if isinstance(value, Array) else np.asarray(value)


def _configure(strategy, server_round: int, w: list[float]) -> list[Message]:
    fc.set_task_identity(3)
    sent = sorted(
        strategy.configure_train(server_round, _record(w), ConfigRecord(), _Nodes()),
        key=lambda m: m.metadata.dst_node_id,
    )
    for i, msg in enumerate(sent):
        fc.set_message_id(msg, f"round{server_round}-{i}")
    return sent


def _aggregate(strategy, server_round: int, sent: list[Message], updates: list[list[float]]) -> np.ndarray:
    replies = [
        Message(RecordDict({"arrays": _record(u), "metrics": MetricRecord({"num-examples": 10 * (i + 1)})}), reply_to=m)
        for i, (m, u) in enumerate(zip(sent, updates, strict=True))
    ]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return _values(arrays)


W0 = [1.0, -2.0, 0.5]
ROUND1 = [[1.5, -1.0, 0.0], [0.0, -2.5, 1.0]]
ROUND2 = [[2.0, 0.0, -1.0], [0.5, -3.0, 0.25]]


@pytest.mark.parametrize("name", list(SERVER_OPTIMISERS))
def test_server_optimisers_keep_their_state_where_fedsim_reads_it(name):
    cls, kwargs, state = SERVER_OPTIMISERS[name]
    strategy = cls(**kwargs)
    for key in state:
        attr = fc.SERVER_STATE_ATTRIBUTES[key]
        assert attr in vars(strategy), UPGRADE.format(flwr.__version__, f"{name}: it has no attribute '{attr}' ({key})")
        assert fc.get_server_state(strategy, key) is None, UPGRADE.format(
            flwr.__version__, f"{name}: '{attr}' is set before the first round"
        )
    sent = _configure(strategy, 1, W0)
    np.testing.assert_array_equal(
        _values(fc.remembered_global(strategy)),
        np.float32(W0),
        err_msg=UPGRADE.format(
            flwr.__version__,
            f"{name}: '{fc.SERVER_STATE_ATTRIBUTES['current_arrays']}' after configure_train is not the model sent",
        ),
    )
    w1 = _aggregate(strategy, 1, sent, ROUND1)
    assert not np.allclose(w1, W0)
    for key in state:
        assert fc.get_server_state(strategy, key) is not None, UPGRADE.format(
            flwr.__version__, f"{name}: a round no longer sets '{fc.SERVER_STATE_ATTRIBUTES[key]}' ({key})"
        )
    _configure(strategy, 2, w1.tolist())
    np.testing.assert_array_equal(
        _values(fc.remembered_global(strategy)),
        np.float32(w1),
        err_msg=UPGRADE.format(flwr.__version__, f"{name}: the remembered global model of round 2 is not the one sent"),
    )


@pytest.mark.parametrize("name", list(SERVER_OPTIMISERS))
def test_a_server_optimiser_restored_from_that_state_continues_exactly(name):
    """What a resume does: a fresh Flower strategy given the checkpointed state takes the
    same step as the one that kept running. Fails if Flower keeps state fedsim misses."""
    cls, kwargs, state = SERVER_OPTIMISERS[name]
    running = cls(**kwargs)
    w1 = _aggregate(running, 1, _configure(running, 1, W0), ROUND1)
    restored = cls(**kwargs)
    for key in state:  # through a checkpoint's portable form, as strategies.strategy writes it
        fc.set_server_state(restored, key, _from_portable(_to_portable(fc.get_server_state(running, key))))
    expected = _aggregate(running, 2, _configure(running, 2, w1.tolist()), ROUND2)
    got = _aggregate(restored, 2, _configure(restored, 2, w1.tolist()), ROUND2)
    np.testing.assert_array_equal(
        got,
        expected,
        err_msg=UPGRADE.format(
            flwr.__version__, f"{name}: it keeps round-to-round state beyond {state} (fedsim would not resume it)"
        ),
    )


def test_the_server_state_names_are_the_attributes_flower_sets():
    declared = {fc.SERVER_STATE_ATTRIBUTES[k] for _, _, state in SERVER_OPTIMISERS.values() for k in state}
    assert declared == set(fc.SERVER_STATE_ATTRIBUTES.values()), "flower_compat declares state no optimiser keeps"
    with pytest.raises(KeyError):
        fc.get_server_state(fs.FedAdam(), "momentum")  # only declared names are reachable


# ----------------------------------------------------------------- simulation runtime


def test_the_simulation_runtime_still_takes_what_fedsim_passes():
    # the modules (flwr.simulation's run_simulation attribute is the function)
    module = importlib.import_module("flwr.simulation.run_simulation")
    simulation_process = importlib.import_module("flwr.simulation.app")

    params = inspect.signature(module._run_simulation).parameters
    assert tuple(params) == fc.SIMULATION_RUNTIME_PARAMETERS, UPGRADE.format(
        flwr.__version__, f"_run_simulation's parameters to {tuple(params)}"
    )
    # fedsim leaves the run to Flower (as run_simulation did): Flower must still create one
    assert params["run"].default is None and params["server_app_context"].default is None, UPGRADE.format(
        flwr.__version__, "_run_simulation: it needs a run from its caller"
    )
    # the function is the runtime of Flower's supported path (flwr run -> flwr-simulation),
    # not a leftover of the deprecated one
    assert simulation_process._run_simulation is module._run_simulation, UPGRADE.format(
        flwr.__version__, "the function flwr-simulation runs the Simulation Runtime with"
    )


def test_the_ray_backend_builds_its_pool_from_the_class_fedsim_replaces(monkeypatch):
    import ray

    raybackend = importlib.import_module("flwr.server.superlink.fleet.vce.backend.raybackend")
    flower_pool = raybackend.BasicActorPool
    assert "BasicActorPool(" in inspect.getsource(raybackend.RayBackend.build), UPGRADE.format(
        flwr.__version__, "how RayBackend builds its actor pool"
    )
    for name in ("submit", "fetch_result_and_return_actor_to_pool", "add_actor_back_to_pool"):
        assert name in vars(flower_pool), UPGRADE.format(flwr.__version__, f"BasicActorPool.{name}")
    with fc.lost_actors_leave_the_pool() as pool_class:
        assert raybackend.BasicActorPool is pool_class
        pool = object.__new__(pool_class)  # without Flower's __init__, which asks Ray for its resources
        pool.pool, pool.num_actors, pool._future_to_actor = ["alive", "lost"], 2, {}
        pool._free = threading.Condition()
        futures = [pool.submit(lambda actor, *job: f"future of {actor}", (None, None, "0", None)) for _ in range(2)]
        assert pool._future_to_actor == {"future of lost": "lost", "future of alive": "alive"}

        def get(future):
            if future == "future of lost":
                raise ray.exceptions.ActorDiedError()
            return (None, "reply", "context")

        monkeypatch.setattr(ray, "get", get)
        with pytest.raises(ray.exceptions.RayActorError):
            pool.fetch_result_and_return_actor_to_pool(futures[0])
        pool.add_actor_back_to_pool(futures[0])  # what Flower's RayBackend does after any failure
        assert pool.fetch_result_and_return_actor_to_pool(futures[1]) == ("reply", "context")
        assert pool.pool == ["alive"] and pool.num_actors == 1
    assert raybackend.BasicActorPool is flower_pool


# ----------------------------------------------------------------------- deprecation


def test_flower_logs_a_deprecation_the_suite_catches(flower_deprecations):
    """tests/conftest.py fails any test during which Flower logs a deprecation notice;
    this one provokes one and checks that the watch sees it."""
    fc.warn_deprecated_feature("fedsim's probe")
    messages = [r.getMessage() for r in flower_deprecations]
    assert len(messages) == 1 and "fedsim's probe" in messages[0], UPGRADE.format(
        flwr.__version__, f"the deprecation notice (it no longer says '{fc.DEPRECATION_MARKER}')"
    )
    assert flower_deprecations[0].levelno == logging.WARNING, UPGRADE.format(
        flwr.__version__, "the level of its deprecation notices"
    )
    flower_deprecations.clear()  # provoked on purpose
