"""Worker processes end with the process that started them.

A sweep's or the local engine's worker pool is spawned by fedsim; if fedsim is
killed (``kill -9``, an OOM kill, a scheduler), its workers must not run on as
orphans holding gigabytes and writing into run directories that a resumed fedsim
is using. Each worker asks the kernel for SIGKILL when its parent dies (Linux's
``PR_SET_PDEATHSIG``) and, everywhere, watches its parent pid from a thread. A parent
that is stopped (Ctrl-C, SIGTERM) but lives on stops its pool's workers at once
(:func:`stop_pool`).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent(poll_s: float = 1.0) -> None:
    """Call first thing in a worker process."""
    # the pid the parent had when it started this worker, not os.getppid(): under load a
    # spawned worker reaches here after its parent was killed, and would take its new
    # parent (init) for its own and live on (a sweep's idle worker did, for minutes)
    started_by = multiprocessing.parent_process()
    parent = started_by.pid if started_by is not None and started_by.pid else os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watcher below does it
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="fedsim-parent-watch", daemon=True).start()


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool's workers now (a sweep or a tune stopped by Ctrl-C or SIGTERM): their
    runs resume from their checkpoints. ``shutdown(wait=False)`` alone leaves them
    running, and leaving the pool's ``with`` block then waits for every running run to
    finish (a tune's workers wrote summaries 10 s after SIGTERM). The processes are
    taken before ``shutdown``, which forgets them."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()


def run_pool_args(workers: int, max_workers: int | None = None) -> dict[str, Any]:
    """The arguments of a :class:`ProcessPoolExecutor` of ``max_workers`` (default
    ``workers``) processes for fedsim runs (a sweep's, a tune's trials): spawned, not
    forked (a forked process inherits torch's thread pools in a broken state), each
    dying with this process, and ``workers`` of them sharing the cores
    (``cpu_count // workers`` torch threads each; a run's ``engine.threads`` wins when
    set). The caller builds the pool, so that a test can stand in for it."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    flwr_level = logging.getLogger("flwr").getEffectiveLevel()
    return {
        "max_workers": max_workers or workers,
        "mp_context": multiprocessing.get_context("spawn"),
        "initializer": _init_run_worker,
        "initargs": (threads, flwr_level),
    }


def _init_run_worker(threads: int, flwr_level: int) -> None:
    """A worker process of a pool of :func:`run_pool_args`: end with the parent, share the cores, keep
    Flower as quiet as the parent."""
    die_with_parent()
    import torch  # only the workers need it: this module stays a light leaf

    torch.set_num_threads(threads)
    logging.getLogger("flwr").setLevel(flwr_level)
