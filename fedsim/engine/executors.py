"""How a cohort's messages are executed: the protocol, and one client after another.

The local engine hands a round's whole cohort to an executor; :mod:`.workers` runs it
in worker processes and :mod:`.batched` in lockstep on a GPU, both falling back to
:class:`SequentialExecutor`.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp

from fedsim.util.flower_compat import ErrorCode

log = logging.getLogger(__name__)


def error_reply(msg: Message, exc: BaseException, code: int = ErrorCode.CLIENT_APP_RAISED_EXCEPTION) -> Message:
    """The reply Flower's runtimes send when a ClientApp raises."""
    reason = f"{type(exc).__name__}: {exc}".strip()
    return Message(Error(code=code, reason=reason.splitlines()[-1] if reason else type(exc).__name__), reply_to=msg)


class Executor(Protocol):
    def run(self, jobs: list[tuple[Message, Context]]) -> list[Message]: ...

    def close(self) -> None: ...


class SequentialExecutor:
    """One client after another, in this process.

    ``timeout`` cannot interrupt Python code running in this thread; a client that
    overruns it is treated as timed out after the fact: its reply is dropped and the
    strategy records the party as a timeout failure.
    """

    def __init__(self, app: ClientApp, timeout: float | None = None) -> None:
        self.app = app
        self.timeout = timeout

    def run(self, jobs: list[tuple[Message, Context]]) -> list[Message]:
        replies = []
        for msg, ctx in jobs:
            t0 = time.perf_counter()
            try:
                reply = self.app(msg, ctx)
            except Exception as exc:  # a client failure is a reply, not a crash of the run
                log.info("client on node %s failed: %s", msg.metadata.dst_node_id, exc)
                reply = error_reply(msg, exc)
            if self.timeout is not None and time.perf_counter() - t0 > self.timeout:
                log.warning(
                    "client on node %s took %.1fs > engine.client_timeout",
                    msg.metadata.dst_node_id,
                    time.perf_counter() - t0,
                )
                continue
            replies.append(reply)
        return replies

    def close(self) -> None:
        pass
