"""Every use of Flower's internals, in one place.

Everything else in fedsim uses Flower's public API (``flwr.app``, ``flwr.clientapp``,
``flwr.serverapp``) and no deprecated one. What follows reaches inside Flower 1.42;
``tests/engines/test_flower_compat.py`` checks each item and fails with a message naming
it when a Flower upgrade changes one, so an upgrade means reading this file, not hunting
through the code.

* :data:`NodeInfo` (``flwr.proto``): what ``Grid.get_nodes()`` returns; fedsim's Grids
  build them.
* :func:`set_message_id`: a Grid gives each message it pushes an id (the private field
  Flower's own ``InMemoryGrid`` writes too); replies point back to it.
* :func:`set_task_identity`: ``Message(...)`` reads a process-wide task identity; an
  in-process Grid sets it, as Flower's runtimes do.
* :func:`empty_run`: the ``Run`` a Grid reports.
* :data:`ErrorCode`, :data:`SUPERLINK_NODE_ID`, :data:`NUMPY_STYPE`: constants.
* :data:`KEY_CLIPPING_NORM`, :data:`KEY_NORM_BIT`, :func:`compute_stdv`,
  :func:`compute_adaptive_noise_params` (``flwr.supercore.differential_privacy``): the
  config and metric keys of Flower's client-side clipping mods and the noise formulas of
  its DP strategy wrappers, which ``fedsim.privacy`` applies around fedsim's aggregation.
* :data:`STRATEGY_START_PARAMETERS`: fedsim's round loop
  (``strategies.strategy.FedsimStrategy.start``) mirrors Flower's ``Strategy.start``
  and adds ``start_round`` (resume) and round hooks; the test checks that Flower's
  loop still takes these parameters.
* :data:`SERVER_STATE_ATTRIBUTES`, :data:`FEDAVGM_STATE`, :data:`FEDOPT_STATE`,
  :func:`get_server_state`, :func:`set_server_state`, :func:`remembered_global`,
  :func:`set_remembered_global`: Flower's FedAvgM and FedOpt family (FedAdam, FedYogi,
  FedAdagrad) keep their server state in undocumented attributes (the global model the
  step starts from, the momentum, the moments); fedsim checkpoints and restores them
  and trims the remembered global model to the trainable parameters
  (``strategies/builtins.py``).
* :func:`run_simulation_runtime`: Flower's Simulation Runtime on the Ray backend.
  ``flwr.simulation.run_simulation`` is deprecated (Flower points to ``flwr run``, which
  runs the apps in other processes, out of reach of a run's in-process hooks); the
  runtime underneath it is ``flwr.simulation.run_simulation._run_simulation``, which
  ``flwr-simulation`` (the process ``flwr run`` starts) calls too.
* :func:`lost_actors_leave_the_pool`: Flower's Ray backend builds its actor pool from
  ``raybackend.BasicActorPool`` and puts an actor back into the pool after any failed
  job, a dead one too; while a run is on, fedsim's subclass takes an actor whose process
  or node is gone out of the pool instead.
* :func:`numpy_array`, :func:`array_record`, :func:`metric_record`, :func:`record_dict`:
  an ``Array``, an ``ArrayRecord``, a ``MetricRecord`` and a ``RecordDict`` built
  without their argument and type checks (10 us an array, 4 us an item: a cross-device
  round builds 10 arrays and a 9-metric record a client), and :class:`KeptArray`
  (:func:`kept_array`, :func:`take_tensor`): an in-process reply's Array, which carries
  its tensor and makes its bytes only when read, so the server reads the tensor
  without parsing them (issue 34).
* :data:`DEPRECATION_MARKER`, :func:`warn_deprecated_feature`: how Flower says a
  feature is deprecated (a WARNING record on the ``flwr`` logger, not a
  ``DeprecationWarning``); the test suite fails on any (``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode, SType
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.supercore.differential_privacy import (
    KEY_CLIPPING_NORM,
    KEY_NORM_BIT,
    compute_adaptive_noise_params,
    compute_stdv,
)
from flwr.supercore.logger import warn_deprecated_feature
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.telemetry import EventType, event

_log = logging.getLogger(__name__)

__all__ = [
    "DEPRECATION_MARKER",
    "FEDAVGM_STATE",
    "FEDOPT_STATE",
    "KEY_CLIPPING_NORM",
    "KEY_NORM_BIT",
    "NUMPY_STYPE",
    "NodeInfo",
    "Run",
    "SERVER_STATE_ATTRIBUTES",
    "SIMULATION_RUNTIME_PARAMETERS",
    "STRATEGY_START_PARAMETERS",
    "SUPERLINK_NODE_ID",
    "ErrorCode",
    "array_record",
    "compute_adaptive_noise_params",
    "compute_stdv",
    "empty_run",
    "get_server_state",
    "lost_actors_leave_the_pool",
    "KEPT_REDUCE",
    "KeptArray",
    "array_nbytes",
    "kept_array",
    "kept_template",
    "metric_record",
    "numpy_array",
    "record_dict",
    "remembered_global",
    "run_simulation_runtime",
    "set_message_id",
    "set_remembered_global",
    "set_server_state",
    "set_task_identity",
    "take_tensor",
    "warn_deprecated_feature",
]

NUMPY_STYPE = SType.NUMPY

STRATEGY_START_PARAMETERS = (
    "self",
    "grid",
    "initial_arrays",
    "num_rounds",
    "timeout",
    "train_config",
    "evaluate_config",
    "evaluate_fn",
)


def set_message_id(msg: Message, message_id: str) -> None:
    """Give a pushed message its id (read back as ``msg.metadata.message_id``)."""
    msg.metadata.__dict__["_message_id"] = message_id


def set_task_identity(run_id: int) -> None:
    """The process-wide identity ``Message(...)`` reads: this run, on the SuperLink's node."""
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    TaskIdentity.task_id = 1


def empty_run(run_id: int) -> Run:
    return Run.create_empty(run_id)


# ------------------------------------------------------------------ records, quickly


def numpy_array(dtype: str, shape: tuple[int, ...], data: bytes) -> Array:
    """``Array(dtype=dtype, shape=shape, stype=NUMPY_STYPE, data=data)`` (the same
    object state) without its argument checks and per-field ``__setattr__``."""
    arr = Array.__new__(Array)
    arr.__dict__.update(_is_dirty=True, dtype=dtype, shape=shape, stype=NUMPY_STYPE, data=data)
    return arr


def array_record(items: Iterable[tuple[str, Array]]) -> ArrayRecord:
    """``ArrayRecord`` filled with ``items`` (str keys, Array values) without the type
    check of each item."""
    rec = ArrayRecord()
    rec.__dict__["_data"].update(items)
    return rec


def metric_record(metrics: dict[str, int | float]) -> MetricRecord:
    """``MetricRecord(metrics)`` for str keys and int or float values, without the type
    check of each item."""
    rec = MetricRecord()
    rec.__dict__["_data"].update(metrics)
    return rec


def record_dict(records: dict[str, Any]) -> RecordDict:
    """``RecordDict(records)`` for str keys and record values, without the type check of
    each item (a reply a client, issue 34)."""
    rd = RecordDict()
    rd.__dict__["_data"].update(records)
    return rd


def take_tensor(arr: Array) -> Any | None:
    """The tensor a :class:`KeptArray` carries, once, while no new bytes replaced the
    ones it describes; else None (a plain Array: its bytes are to be parsed). The tensor
    is shared with the Array, whose bytes (made when first read) describe it: its reader
    must not change it in place."""
    d = arr.__dict__
    return d["_tensor"] if d.pop(_TAKE, False) else None


_TAKE = "_fedsim_take"
#: a KeptArray's own ``__reduce__`` value (set by whoever made it, strategies.arrays)
KEPT_REDUCE = "_fedsim_reduce"


class KeptArray(Array):
    """An in-process reply's ``Array``: it carries the tensor it describes (``_tensor``) and
    makes its bytes (``numpy_array``'s, bit for bit: ``_header`` then the tensor's) only
    when something reads ``data`` (Flower's own aggregations, a wire, a checkpoint). The
    local engine's server reads the tensor (:func:`take_tensor`) and never the bytes: a
    cross-device reply's ten arrays are not copied a second time (issue 34;
    ``benchmarks/peers.py``)."""

    @property  # type: ignore[override]
    def data(self) -> bytes:
        d = self.__dict__
        made = d.get("_bytes")
        if made is None:
            made = d["_bytes"] = d["_header"] + d["_tensor"].numpy().tobytes()
        return made

    @data.setter
    def data(self, value: bytes) -> None:  # new bytes: the tensor no longer describes them
        self.__dict__["_bytes"] = value
        self.__dict__.pop(_TAKE, None)

    def nbytes(self) -> int:
        """``len(self.data)``, without making the bytes."""
        made = self.__dict__.get("_bytes")
        return len(made) if made is not None else self.__dict__["_nbytes"]

    def __eq__(self, other: object) -> bool:  # equal to the plain Array of the same bytes
        if not isinstance(other, Array):
            return NotImplemented
        return (self.dtype, self.shape, self.stype, self.data) == (other.dtype, other.shape, other.stype, other.data)

    __hash__ = None  # type: ignore[assignment]  # as Array's (a mutable dataclass)

    def __reduce__(self) -> tuple:
        """Across a process boundary: by its own reducer (``KEPT_REDUCE``: a packed
        reply's entry, a view of the one vector pickled once) while it still carries its
        tensor unread, else as the plain Array of its bytes."""
        own = self.__dict__.get(KEPT_REDUCE)
        if own is not None and _TAKE in self.__dict__ and "_bytes" not in self.__dict__:
            return own
        return numpy_array, (self.dtype, self.shape, self.data)


def kept_template(dtype: str, shape: tuple[int, ...], header: bytes, nbytes: int) -> dict[str, Any]:
    """What every :class:`KeptArray` of one (dtype, shape) holds but its tensor: its
    fields, its .npy ``header`` and its byte count (``len(header)`` + the data's)."""
    return {
        "_is_dirty": True,
        "dtype": dtype,
        "shape": shape,
        "stype": NUMPY_STYPE,
        "_header": header,
        "_nbytes": nbytes,
    }


def kept_array(template: dict[str, Any], tensor: Any, reduce: tuple | None = None) -> KeptArray:
    """A :class:`KeptArray` of ``tensor`` (C-contiguous, on the CPU) from its
    :func:`kept_template`; ``reduce``: its own pickling (``KEPT_REDUCE``)."""
    d = template.copy()
    d["_tensor"] = tensor
    d[_TAKE] = True
    if reduce is not None:
        d[KEPT_REDUCE] = reduce
    arr = _new_kept(KeptArray)
    object.__setattr__(arr, "__dict__", d)
    return arr


_new_kept = KeptArray.__new__


def array_nbytes(arr: Array) -> int:
    """``len(arr.data)``: what Flower's ``count_bytes`` adds up, without making a
    :class:`KeptArray`'s bytes."""
    return arr.nbytes() if isinstance(arr, KeptArray) else len(arr.data)


# ------------------------------------------------------------- server optimisers' state

#: fedsim's name for a piece of server state (its key in checkpoints) -> the attribute of
#: Flower's strategy that holds it. Should Flower rename one, change the value here: the
#: checkpoint key stays, so runs checkpointed before the upgrade still resume.
SERVER_STATE_ATTRIBUTES: dict[str, str] = {
    # FedAvgM and FedOpt: the global model the server step starts from (FedOpt sets it
    # in every configure_train, a dict of ndarrays; FedAvgM once, then after each step,
    # an ArrayRecord)
    "current_arrays": "current_arrays",
    # FedAvgM: the server momentum, a list of ndarrays in the model's order
    "momentum_vector": "momentum_vector",
    # FedOpt: the first and second moments, dicts of ndarrays
    "m_t": "m_t",
    "v_t": "v_t",
}
#: what Flower's FedAvgM keeps from round to round
FEDAVGM_STATE = ("current_arrays", "momentum_vector")
#: what Flower's FedAdam, FedYogi and FedAdagrad keep from round to round
FEDOPT_STATE = ("current_arrays", "m_t", "v_t")


def get_server_state(strategy: Any, name: str) -> Any:
    """The server state ``name`` (a key of :data:`SERVER_STATE_ATTRIBUTES`) of a Flower
    strategy; None before the first round sets it."""
    return getattr(strategy, SERVER_STATE_ATTRIBUTES[name], None)


def set_server_state(strategy: Any, name: str, value: Any) -> None:
    """Restore the server state ``name`` of a Flower strategy."""
    setattr(strategy, SERVER_STATE_ATTRIBUTES[name], value)


def remembered_global(strategy: Any) -> Any:
    """The global model a Flower server optimiser takes its next step from (after its
    ``configure_train``: the model sent this round); None before the first round."""
    return get_server_state(strategy, "current_arrays")


def set_remembered_global(strategy: Any, arrays: Any) -> None:
    """Replace the global model a Flower server optimiser steps from (fedsim trims it to
    the trainable parameters)."""
    set_server_state(strategy, "current_arrays", arrays)


# ----------------------------------------------------------------- simulation runtime

#: the parameters of ``_run_simulation`` in Flower 1.42 (the test compares them)
SIMULATION_RUNTIME_PARAMETERS = (
    "num_supernodes",
    "exit_event",
    "client_app",
    "server_app",
    "backend_name",
    "backend_config",
    "client_app_attr",
    "server_app_attr",
    "server_app_context",
    "app_dir",
    "run",
    "enable_tf_gpu_growth",
    "verbose_logging",
    "is_app",
    "metrics",
)


def run_simulation_runtime(
    server_app: Any, client_app: Any, num_supernodes: int, backend_config: dict[str, Any]
) -> None:
    """Run ``server_app`` against ``num_supernodes`` ClientApps on Flower's Simulation
    Runtime with its Ray backend, and return when the ServerApp has finished.

    This is what the deprecated ``flwr.simulation.run_simulation`` did, without its
    deprecation notice: the telemetry event on entry, then the runtime itself, with the
    keyword arguments ``run_simulation`` passes (Flower creates the run and its task
    identity, the ServerApp runs in a thread of this process, each ClientApp in a Ray
    actor). Flower's simulation package (1.2 s) is imported here, for Ray runs only.
    """
    from flwr.simulation.run_simulation import _run_simulation

    event(
        EventType.PYTHON_API_RUN_SIMULATION_ENTER,
        event_details={"backend": "ray", "num-supernodes": num_supernodes},
    )
    with lost_actors_leave_the_pool():
        _run_simulation(
            num_supernodes=num_supernodes,
            exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app,
            server_app=server_app,
            backend_name="ray",
            backend_config=backend_config,
        )


@contextlib.contextmanager
def lost_actors_leave_the_pool() -> Iterator[type]:
    """Within the block, Flower's Ray backend builds a pool that drops an actor whose
    process or node is gone (a ``RayActorError``: the actor died, or its node did) and
    keeps using the others; the job it had fails, as a client failure of the round.

    Flower's ``BasicActorPool`` puts every actor back after a failed job: with one of
    two nodes killed, its actor then failed every job it was handed (half of each
    cohort) until the run stopped on ``federation.max_failure_fraction``.
    """
    import flwr.server.superlink.fleet.vce.backend.raybackend as raybackend
    import ray

    flower_pool = raybackend.BasicActorPool

    class PoolWithoutLostActors(flower_pool):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._free = threading.Condition()

        def submit(self, actor_fn: Any, job: Any) -> Any:
            # Flower runs one worker thread per actor it started: with one lost, a
            # thread waits here for an actor instead of popping from an empty pool
            with self._free:
                while not self.pool:
                    if self.num_actors <= 0:
                        raise RuntimeError("every Ray actor of the run is lost (their nodes are gone)")
                    self._free.wait(0.05)
                return super().submit(actor_fn, job)

        def fetch_result_and_return_actor_to_pool(self, future: Any) -> Any:
            try:
                return super().fetch_result_and_return_actor_to_pool(future)
            except ray.exceptions.RayActorError as exc:
                with self._free:
                    if self._future_to_actor.pop(future, None) is not None:
                        self.num_actors -= 1
                        _log.warning("a Ray actor is lost (%s): %d left", type(exc).__name__, self.num_actors)
                    self._free.notify_all()
                raise

        def add_actor_back_to_pool(self, future: Any) -> None:
            with self._free:
                actor = self._future_to_actor.pop(future, None)
                if actor is not None:  # a lost one was taken out above
                    self.pool.append(actor)
                    self._free.notify()

    raybackend.BasicActorPool = PoolWithoutLostActors
    try:
        yield PoolWithoutLostActors
    finally:
        raybackend.BasicActorPool = flower_pool


# ----------------------------------------------------------------------- deprecation

#: what every deprecation notice of Flower's begins with: Flower logs deprecations as
#: WARNING records on its ``flwr`` logger (``warn_deprecated_feature``), not as Python
#: ``DeprecationWarning``s, so a filter on warnings alone would never see them
DEPRECATION_MARKER = "DEPRECATED FEATURE"
