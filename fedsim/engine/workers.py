"""``engine.workers = N``: N clients at once on the local engine, in N processes.

With ``engine.threads > 0`` (the default, 1) the main process is one of the N: it trains
a share of each cohort (:class:`ShareClock`) while N - 1 spawned worker processes train
the rest; with ``engine.threads = 0`` (torch's own thread count, which may differ
between processes) N worker processes train and the main process waits. Each worker
process builds the ClientApp once (dataset, partition and one model instance, as in the
main process) and then serves Messages. Every random draw of a client comes from (seed,
round, party), so which process runs a party does not change its result: ``workers =
N`` gives the same updates as ``workers = 1`` (bit for bit when each process uses the
same number of threads, see ``engine.threads``).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass

import torch
from flwr.app import Context, Message

from fedsim.client.app import make_client_app
from fedsim.engine.executors import SequentialExecutor, error_reply
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


@dataclass
class ShareClock:
    """How many of a cohort's K clients the main process trains itself (``engine.workers =
    N``, the main process one of the N trainers): as many as keeps it as busy as a pool
    process, by the last cohort's timings, ``m c_m = (K - m) c_p / (N - 1)`` with c_m its
    seconds a client and c_p a pool process's (K/N before any timing). Which process
    trains a party does not change its result (every draw comes from (seed, round, party)
    and every process uses the same torch thread count), so timings may decide it."""

    trainers: int
    main_client: float | None = None  # c_m, seconds
    pool_client: float | None = None  # c_p, seconds
    cohorts: int = 0

    def local_count(self, k: int) -> int:
        """m, at least one client for each trainer while the cohort has that many (so
        every trainer's timing stays current)."""
        n, cm, cp = self.trainers, self.main_client, self.pool_client
        if not cm or not cp:
            return k // n
        m = round(k * (cp / (n - 1)) / (cm + cp / (n - 1)))
        return max(1, min(k - (n - 1), m)) if k >= n else max(0, min(k, m))

    def trained(self, main: tuple[int, float], pool: tuple[int, float], pool_size: int) -> None:
        """This cohort's (clients, seconds) in this process and in the pool; the first
        cohort's are not timings (the worker processes start, each process builds its data
        and model)."""
        self.cohorts += 1
        if self.cohorts == 1:
            return
        if main[0]:
            self.main_client = main[1] / main[0]
        if pool[0]:
            self.pool_client = pool[1] * min(pool_size, pool[0]) / pool[0]


class WorkerPoolExecutor:
    """``workers`` trainers: a pool of spawned processes running the ClientApp, and, given
    ``local`` (the ClientApp of this process), this process as one of them
    (:class:`ShareClock`: it trains a share of each cohort while the pool trains the rest).

    With ``local`` the pool has ``workers - 1`` processes: N trainers on N cores and no
    process waiting while the others train (``benchmarks/peers.py`` fedsim-w2 on 2
    cores, a pool of 2 and a waiting main process against a pool of 1 and the main
    process: 100 x 100 0.87-0.90x -> 0.67-0.75x the plain loop, 1,000 x 10 1.01-1.10x ->
    0.82-0.83x). The server's work between rounds stays serial: the pool waits through it.
    """

    def __init__(self, settings, workers: int, timeout: float | None = None, threads: int = 0, local=None) -> None:
        threads = threads or settings.config.engine.threads
        self.timeout, self.local = timeout, local
        self.share = ShareClock(workers)
        pool_size = workers - 1 if local is not None else workers
        # spawn, not fork: a forked process inherits torch's thread pools in a broken state
        self.pool = cf.ProcessPoolExecutor(
            max_workers=pool_size,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(settings, threads_per_worker(workers, threads)),
        )
        self.pool_size = pool_size

    def run(self, jobs: list[tuple[Message, Context]]) -> list[Message]:
        if not jobs:  # an empty stage (no evaluation cohort) is not a round of training
            return []
        mine = self.share.local_count(len(jobs)) if self.local is not None else 0
        t0 = time.perf_counter()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        futures, parts = self._submit(jobs[mine:])
        done = [t0]
        for fut in futures:  # when the pool's last slice came back
            fut.add_done_callback(lambda _: done.append(time.perf_counter()))
        replies = []
        if mine:
            replies.extend(SequentialExecutor(self.local, self.timeout).run(jobs[:mine]))
        t_main = time.perf_counter() - t0
        replies.extend(self._gather(futures, parts, deadline))
        self.share.trained((mine, t_main), (len(jobs) - mine, max(done) - t0), self.pool_size)
        return replies

    def _submit(self, jobs: list[tuple[Message, Context]]) -> tuple[list[cf.Future], list[list]]:
        # a few slices of the cohort a worker, not one task a client: the messages of a
        # slice share the cohort's RecordDict, pickled once a slice instead of once a
        # client, and the pool's cost per task is paid a slice. benchmarks/peers.py
        # fedsim-w2, 1,000 x 10 (100 clients a round): the main process's CPU time
        # 0.096-0.126 -> 0.067-0.076 s a round (100 x 100, 10 a round: 0.022-0.023 -> 0.020-0.021)
        parts = [jobs[s] for s in chunks(len(jobs), self.pool_size)]
        return [self.pool.submit(_run_chunk, part) for part in parts], parts

    def _gather(self, futures: list[cf.Future], parts: list[list], deadline: float | None) -> list[Message]:
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
