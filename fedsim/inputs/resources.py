"""Whether the run's model fits in this machine's memory, estimated on PyTorch's meta
device before anything is allocated (the data sets check their own size with
:func:`fedsim.util.memory.check_fits`)."""

from __future__ import annotations

import torch

from fedsim.models import build_model
from fedsim.util.memory import check_fits


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
