"""The embedded engine: an in-process Flower ``Grid``.

:class:`LocalGrid` implements Flower's abstract ``Grid`` and hands each Message
straight to the ClientApp in the same process: no Ray, no gRPC, no serialisation
round trip, no polling sleep. A round's whole cohort arrives in one
``push_messages`` call and goes to an executor, which runs the clients one after
another (``engine.workers = 1``) or in worker processes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid

from fedsim.client.app import make_client_app
from fedsim.engine.batched import BatchedExecutor
from fedsim.engine.executors import Executor, SequentialExecutor
from fedsim.engine.registry import Engine, register
from fedsim.engine.workers import WorkerPoolExecutor
from fedsim.inputs.run_inputs import RunSettings
from fedsim.server.app import RunHooks, RunOutcome, make_server_app
from fedsim.util.flower_compat import SUPERLINK_NODE_ID, NodeInfo, Run, empty_run, set_message_id, set_task_identity
from strategies.cohort import ConsecutiveNodes

log = logging.getLogger(__name__)

#: node ids of the local engine: readable, and clear of Flower's SUPERLINK_NODE_ID (1)
NODE_BASE = 1000


class LocalGrid(Grid):
    """An in-process Grid over ``num_parties`` virtual nodes."""

    def __init__(self, executor: Executor, num_parties: int, run_config: dict[str, Any], run_id: int = 1) -> None:
        self.executor = executor
        self.num_parties = num_parties
        self.run_config = run_config
        self._run = empty_run(run_id)
        self._run.override_config = run_config
        self.node_of_party = ConsecutiveNodes(num_parties, to=NODE_BASE)
        self._party_of_node = self.node_of_party.inverse()
        self._contexts: dict[int, Context] = {}
        self._replies: dict[str, Message] = {}

    # --- Grid API -----------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._party_of_node)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [NodeInfo(node_id=n) for n in self._party_of_node]

    def context(self, node_id: int) -> Context:
        """The node's Context: kept only while its state holds something (a million
        parties, a hundred a round, would otherwise keep every Context they were given)."""
        ctx = self._contexts.get(node_id)
        if ctx is None:
            ctx = Context(
                run_id=self._run.run_id,
                node_id=node_id,
                node_config={"partition-id": self._party_of_node[node_id], "num-partitions": self.num_parties},
                state=RecordDict(),
                run_config=self.run_config,
            )
        return ctx

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        jobs: list[tuple[Message, Context]] = []
        ids = []
        for msg in messages:
            if msg.metadata.dst_node_id not in self._party_of_node:
                raise ValueError(f"message for unknown node {msg.metadata.dst_node_id}")
            set_message_id(msg, uuid.uuid4().hex)
            jobs.append((msg, self.context(msg.metadata.dst_node_id)))
            ids.append(msg.metadata.message_id)
        for reply in self.executor.run(jobs):
            self._replies[reply.metadata.reply_to_message_id] = reply
        for _, ctx in jobs:
            if len(ctx.state):
                self._contexts[ctx.node_id] = ctx
            else:
                self._contexts.pop(ctx.node_id, None)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        out = []
        for mid in message_ids:
            reply = self._replies.pop(mid, None)
            if reply is not None:
                out.append(reply)
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        # replies exist as soon as push returns: no polling loop, no sleep
        return self.pull_messages(self.push_messages(messages))


def run_local(
    settings: RunSettings, hooks: RunHooks | None = None, make_executor: Callable[..., Executor] | None = None
) -> RunOutcome:
    """Run ``settings``' experiment on the local engine (server and clients in-process)."""
    cfg = settings.config
    client_app = make_client_app(settings, kept=True)
    if make_executor is not None:
        executor = make_executor(client_app)
    elif cfg.engine.workers > 1:
        # this process trains a share too when every process has the same thread count
        # (engine.threads > 0), which keeps a party's result the same wherever it trains
        local = client_app if cfg.engine.threads > 0 else None
        executor = WorkerPoolExecutor(settings, cfg.engine.workers, timeout=cfg.engine.client_timeout, local=local)
    elif cfg.engine.batch_clients != "off":
        executor = BatchedExecutor(client_app, settings, cfg.engine.batch_clients, timeout=cfg.engine.client_timeout)
    else:
        executor = SequentialExecutor(client_app, timeout=cfg.engine.client_timeout)
    run_id = 1
    set_task_identity(run_id)
    grid = LocalGrid(executor, cfg.partition.n_parties, settings.to_user_config(), run_id=run_id)
    outcomes: list[RunOutcome] = []
    server_app = make_server_app(settings, hooks, outcomes.append)
    server_ctx = Context(
        run_id=run_id,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=settings.to_user_config(),
    )
    try:
        server_app(grid, server_ctx)
    finally:
        executor.close()
    return outcomes[0]


@register
class LocalEngine(Engine):
    name = "local"
    summary = "an in-process Flower Grid: a cohort runs one client after another, in worker processes or batched"
    paper = "fedsim's own (Flower's Grid interface)"
    reads = ("workers", "batch_clients")

    def run(self, settings: RunSettings, hooks: RunHooks | None = None) -> RunOutcome:
        return run_local(settings, hooks)
