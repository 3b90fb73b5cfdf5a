"""The Flower internals fedsim relies on (fedsim/flower_compat.py) are still there.

A failure here means a Flower upgrade changed one of them: read fedsim/flower_compat.py,
adapt the item named in the message, and nothing else in fedsim should need to change.
"""

from __future__ import annotations

import inspect

import flwr
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp.strategy import Strategy

from fedsim import flower_compat as fc

UPGRADE = "Flower {} changed {}: update fedsim/flower_compat.py"


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
