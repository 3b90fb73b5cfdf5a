"""``engine.workers = N``: N clients at once in worker processes of the local engine.

Each worker process builds the ClientApp once (dataset, partition and one model
instance, as in the main process) and then serves Messages. Every random draw of a
client comes from (seed, round, party), so which worker runs a party does not
change its result: ``workers = N`` gives the same updates as ``workers = 1``
(bit for bit when each process uses the same number of threads, see
``engine.threads``).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import time

import torch
from flwr.app import Context, Message

from fedsim.client.app import make_client_app
from fedsim.engine.executors import error_reply
from fedsim.util.flower_compat import set_task_identity
from fedsim.util.lifecycle import die_with_parent

log = logging.getLogger(__name__)

_APP = None


def _init_worker(settings, threads: int) -> None:
    global _APP
    die_with_parent()
    torch.set_num_threads(max(1, threads))
    set_task_identity(1)
    _APP = make_client_app(settings)


def _run_job(msg: Message, ctx: Context) -> Message:
    assert _APP is not None, "worker not initialised"
    try:
        return _APP(msg, ctx)
    except Exception as exc:  # reported as a Flower error reply, like Flower's runtimes do
        return error_reply(msg, exc)


def threads_per_worker(workers: int, configured: int) -> int:
    if configured > 0:
        return configured
    return max(1, (os.cpu_count() or 1) // workers)


class WorkerPoolExecutor:
    """A pool of ``workers`` spawned processes running the ClientApp."""

    def __init__(self, settings, workers: int, timeout: float | None = None, threads: int = 0) -> None:
        threads = threads or settings.config.engine.threads
        self.timeout = timeout
        # spawn, not fork: a forked process inherits torch's thread pools in a broken state
        self.pool = cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(settings, threads_per_worker(workers, threads)),
        )

    def run(self, jobs: list[tuple[Message, Context]]) -> list[Message]:
        futures = [self.pool.submit(_run_job, msg, ctx) for msg, ctx in jobs]
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        replies = []
        for fut, (msg, _) in zip(futures, jobs):
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                replies.append(fut.result(timeout=left))
            except cf.TimeoutError:
                log.warning("client on node %s timed out", msg.metadata.dst_node_id)
                fut.cancel()
            except Exception as exc:  # the worker process died
                replies.append(error_reply(msg, exc))
        return replies

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
