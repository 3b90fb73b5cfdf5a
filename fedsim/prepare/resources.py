"""What fits in this machine's memory: estimates checked before anything is allocated.

A data set or a model that cannot fit is a one-line error with the estimate, not a
MemoryError half-way through (``data.n_train=10**10``, ``model.hidden=[100000,100000]``).
"""

from __future__ import annotations

import os

import torch

from fedsim.errors import ConfigError
from fedsim.models import build_model


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


def check_model_fits(cfg_model, input_shape: tuple[int, ...], num_classes: int, copies: int = 4) -> int:
    """Build the model on PyTorch's meta device (no memory), count its parameters and
    check that ``copies`` fp32 copies fit (weights, gradients, momentum, the global
    copy); returns the parameter count."""
    with torch.device("meta"):
        model = build_model(cfg_model, input_shape, num_classes)
    n = sum(p.numel() for p in model.parameters())
    check_fits(
        4.0 * copies * n, f"model '{cfg_model.name}' ({n:,} parameters)", "make it smaller (model.hidden, model.name)"
    )
    return n
