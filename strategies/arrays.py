"""Conversions between Flower records and torch state_dicts, and weighted averaging.

Aggregation works key by key on the decoded tensors: float entries are averaged
with float64 accumulation in a fixed client order (sorted by party id), so a run
gives the same bits on every engine; integer buffers (BatchNorm's
``num_batches_tracked``) are never averaged as floats: a step counter takes the
maximum over the clients.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import numpy as np
import torch
from flwr.app import Array, ArrayRecord


StateDict = "OrderedDict[str, torch.Tensor]"


def record_to_state(record: ArrayRecord) -> "OrderedDict[str, torch.Tensor]":
    """ArrayRecord -> state_dict of CPU tensors (one numpy decode per array)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, arr in record.items():
        nd = arr.numpy()
        if not nd.flags.writeable:
            nd = nd.copy()
        out[key] = torch.from_numpy(nd)
    return out


def state_to_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """state_dict -> ArrayRecord (what Flower sends)."""
    rec = ArrayRecord()
    for key, t in state.items():
        nd = t.detach().cpu().numpy()
        # not np.ascontiguousarray: it turns a 0-d counter into shape (1,)
        rec[key] = Array(nd if nd.flags.c_contiguous else nd.copy())
    return rec


def is_float(t: torch.Tensor) -> bool:
    return torch.is_floating_point(t) or torch.is_complex(t)


def weighted_average(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> "OrderedDict[str, torch.Tensor]":
    """sum_k p_k * state_k with p_k = weights_k / sum(weights); integer buffers: max.

    FedAvg (McMahan et al. 2017): w+ = sum_k (n_k / n) w_k.
    """
    if not states:
        raise ValueError("weighted_average needs at least one state")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weighted_average: weights sum to {total}; need a positive total")
    probs = [float(w) / total for w in weights]
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, first in states[0].items():
        if is_float(first):
            acc = torch.zeros(first.shape, dtype=torch.float64)
            for p, st in zip(probs, states):
                acc.add_(st[key].to(torch.float64), alpha=p)
            out[key] = acc.to(first.dtype)
        else:
            out[key] = torch.stack([st[key] for st in states]).amax(dim=0)
    return out


def restore_dtypes(state: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Cast each entry back to the template's dtype.

    Flower's built-in strategies aggregate in numpy, where ``int64 * float``
    becomes float64; this puts counters back to integers (rounded) and float64
    weights back to float32, so every strategy hands the model the dtypes it has.
    """
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, t in state.items():
        ref = template.get(key)
        if ref is None or t.dtype == ref.dtype:
            out[key] = t
        elif is_float(ref):
            out[key] = t.to(ref.dtype)
        else:
            out[key] = torch.round(t.to(torch.float64)).to(ref.dtype) if is_float(t) else t.to(ref.dtype)
    return out


def all_finite(state: Mapping[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state.values() if is_float(t))


def flatten_floats(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    parts = [t.reshape(-1).to(torch.float32) for t in state.values() if is_float(t)]
    return torch.cat(parts) if parts else torch.zeros(0)
