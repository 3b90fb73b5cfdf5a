"""Every use of Flower's internals, in one place.

Everything else in fedsim uses Flower's public API (``flwr.app``, ``flwr.clientapp``,
``flwr.serverapp``, ``flwr.simulation.run_simulation``). What follows reaches inside
Flower 1.42; ``tests/engines/test_flower_compat.py`` checks each item and fails with a
message naming it when a Flower upgrade changes one, so an upgrade means reading this
file, not hunting through the code.

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
"""

from __future__ import annotations

from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode, SType
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.supercore.differential_privacy import (
    KEY_CLIPPING_NORM,
    KEY_NORM_BIT,
    compute_adaptive_noise_params,
    compute_stdv,
)
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = [
    "KEY_CLIPPING_NORM",
    "KEY_NORM_BIT",
    "NUMPY_STYPE",
    "NodeInfo",
    "Run",
    "STRATEGY_START_PARAMETERS",
    "SUPERLINK_NODE_ID",
    "ErrorCode",
    "compute_adaptive_noise_params",
    "compute_stdv",
    "empty_run",
    "set_message_id",
    "set_task_identity",
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
