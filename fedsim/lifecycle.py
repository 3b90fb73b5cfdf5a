"""Worker processes end with the process that started them.

A sweep's or the local engine's worker pool is spawned by fedsim; if fedsim is
killed (``kill -9``, an OOM kill, a scheduler), its workers must not run on as
orphans holding gigabytes and writing into run directories that a resumed fedsim
is using. Each worker asks the kernel for SIGKILL when its parent dies (Linux's
``PR_SET_PDEATHSIG``) and, everywhere, watches its parent pid from a thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent(poll_s: float = 1.0) -> None:
    """Call first thing in a worker process."""
    parent = os.getppid()
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
