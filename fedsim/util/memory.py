"""What fits in this machine's memory: estimates checked before anything is allocated.

A data set or a model that cannot fit is a one-line error with the estimate, not a
MemoryError half-way through (``data.n_train=10**10``, ``model.hidden=[100000,100000]``).
"""

from __future__ import annotations

import os

from fedsim.errors import ConfigError


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):  # no /proc (not Linux) or a line it cannot read: ask sysconf
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits(nbytes: float, what: str, hint: str) -> None:
    """ConfigError when ``nbytes`` exceed the memory available now."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise ConfigError(f"{what} needs about {_gib(nbytes)} of memory, more than the {_gib(free)} available; {hint}")
