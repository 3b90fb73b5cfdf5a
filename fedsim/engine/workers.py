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
    # replies packed (one vector of the weights, pickled once): benchmarks/peers.py
    # fedsim-w2 1000x10, the main process's screening and average read them without a copy
    _APP = make_client_app(settings, kept=True)


def _run_job(msg: Message, ctx: Context) -> Message:
    assert _APP is not None, "worker not initialised"
    try:
        return _APP(msg, ctx)
    except Exception as exc:  # reported as a Flower error reply, like Flower's runtimes do
        return error_reply(msg, exc)


def _run_chunk(jobs: list[tuple[Message, Context]]) -> list[Message]:
    """Several clients in a row: one task of the pool for a slice of the cohort."""
    return [_run_job(msg, ctx) for msg, ctx in jobs]


def chunks(n: int, workers: int, per_worker: int = 4) -> list[slice]:
    """``n`` jobs cut into contiguous slices, ``per_worker`` a worker (fewer when there are
    fewer jobs), their sizes differing by at most one."""
    k = max(1, min(n, workers * per_worker))
    bounds = [i * n // k for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def threads_per_worker(workers: int, configured: int) -> int:
    if configured > 0:
        return configured
    return max(1, (os.cpu_count() or 1) // workers)


class WorkerPoolExecutor:
    """A pool of ``workers`` spawned processes running the ClientApp."""

    def __init__(self, settings, workers: int, timeout: float | None = None, threads: int = 0) -> None:
        threads = threads or settings.config.engine.threads
        self.timeout, self.workers = timeout, workers
        # spawn, not fork: a forked process inherits torch's thread pools in a broken state
        self.pool = cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(settings, threads_per_worker(workers, threads)),
        )

    def run(self, jobs: list[tuple[Message, Context]]) -> list[Message]:
        # a few slices of the cohort a worker, not one task a client: the messages of a
        # slice share the cohort's RecordDict, pickled once a slice instead of once a
        # client, and the pool's cost per task is paid a slice. benchmarks/peers.py
        # fedsim-w2, 1,000 x 10 (100 clients a round): the main process's CPU time
        # 0.096-0.126 -> 0.067-0.076 s a round (100 x 100, 10 a round: 0.022-0.023 -> 0.020-0.021)
        parts = [jobs[s] for s in chunks(len(jobs), self.workers)]
        futures = [self.pool.submit(_run_chunk, part) for part in parts]
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        replies = []
        for fut, part in zip(futures, parts):
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                replies.extend(fut.result(timeout=left))
            except cf.TimeoutError:  # the slice's clients that had not replied by the deadline
                for msg, _ in part:
                    log.warning("client on node %s timed out", msg.metadata.dst_node_id)
                fut.cancel()
            except Exception as exc:  # the worker process died
                replies.extend(error_reply(msg, exc) for msg, _ in part)
        return replies

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
