"""Conversions between Flower records and torch state_dicts, and weighted averaging.

Aggregation works key by key on the decoded tensors: float entries are averaged
with float64 accumulation in a fixed client order (sorted by party id), so a run
gives the same bits on every engine; integer buffers (BatchNorm's
``num_batches_tracked``) are never averaged as floats: a step counter takes the
maximum over the clients.
"""

from __future__ import annotations

import io
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedsim.util.flower_compat import NUMPY_STYPE, array_record, keep_tensor, numpy_array, take_tensor

StateDict = "OrderedDict[str, torch.Tensor]"


# --- Flower records <-> tensors -------------------------------------------------
#
# An Array's data is the bytes of ``np.save`` (an .npy header, then the raw array).
# Flower builds them with np.save into a BytesIO and reads them with np.load, which
# parses the header with ``ast.literal_eval``: ~35 us and ~50 us per array. The same
# bytes come from a cached header + ``tobytes()``, and go back through a cached header
# parse + ``np.frombuffer``; the records stay ordinary Flower records (Flower's own
# ``Array.numpy()`` reads them) and the round trip is bit-exact. Measured:
# ``python benchmarks/engine_overhead.py --flower-arrays`` (100 logistic regressions a
# round, overhead-bound): 148 ms a round against 163 ms with Flower's conversions (-9%).

_HEADERS: dict[tuple, bytes] = {}
_PARSED: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}


def _npy_header(nd: np.ndarray) -> bytes:
    key = (nd.dtype.str, nd.shape)
    hdr = _HEADERS.get(key)
    if hdr is None:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(nd))
        hdr = _HEADERS[key] = buf.getvalue()
        if len(_HEADERS) > 4096:
            _HEADERS.clear()
    return hdr


def array_from_numpy(nd: np.ndarray) -> Array:
    """``flwr.app.Array(nd)`` without np.save (identical bytes)."""
    if not nd.flags.c_contiguous:
        nd = np.ascontiguousarray(nd) if nd.ndim else nd.copy()
    return numpy_array(_dtype_name(nd.dtype), tuple(int(s) for s in nd.shape), _npy_header(nd) + nd.tobytes())


_DTYPE_NAMES: dict[np.dtype, str] = {}


def _dtype_name(dtype: np.dtype) -> str:
    """``str(dtype)``, cached (numpy's costs 10 us: 10 arrays a client, issue 34)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


def array_to_numpy(arr: Array) -> np.ndarray:
    """``arr.numpy()`` without np.load: a writable copy of the array in ``arr.data``."""
    data = arr.data
    if arr.stype != NUMPY_STYPE or data[:6] != b"\x93NUMPY":
        return np.array(arr.numpy(), copy=True)
    major = data[6]
    hlen = int.from_bytes(data[8:10], "little") + 10 if major == 1 else int.from_bytes(data[8:12], "little") + 12
    header = bytes(data[:hlen])
    parsed = _PARSED.get(header)
    if parsed is None:
        d = np.lib.format.read_array_header_1_0(io.BytesIO(header[8:]), max_header_size=100000) if major == 1 else None
        if d is None or d[1]:  # another header version or Fortran order: let numpy do it
            return np.array(arr.numpy(), copy=True)
        parsed = _PARSED[header] = (np.dtype(d[2]), tuple(d[0]), hlen)
        if len(_PARSED) > 4096:
            _PARSED.clear()
    dtype, shape, off = parsed
    count = int(np.prod(shape)) if shape else 1
    return np.frombuffer(data, dtype=dtype, count=count, offset=off).reshape(shape).copy()


def record_to_state(record: ArrayRecord) -> OrderedDict[str, torch.Tensor]:
    """ArrayRecord -> state_dict of CPU tensors (the caller's own: it may change them)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, arr in record.items():
        kept = take_tensor(arr)
        out[key] = kept if kept is not None else torch.from_numpy(array_to_numpy(arr))
    return out


def state_to_record(state: Mapping[str, torch.Tensor], keep: bool = False) -> ArrayRecord:
    """state_dict -> ArrayRecord (what Flower sends).

    ``keep``: each Array also carries a copy of its tensor, which the first
    :func:`record_to_state` of the record takes instead of parsing and copying the bytes
    (a reply that stays in the process: the local engine's). Measured in a cross-device
    round (100 clients of 10 MNIST images, simple-cnn; issue 34), CPU time a client:
    the server's screening of a reply 0.25 -> 0.11 ms, the client's reply 0.40 -> 0.37 ms
    (with the quick Arrays of ``fedsim.util.flower_compat``).
    """
    items = []
    for key, t in state.items():
        t = t.detach().cpu()
        if keep:
            t = t.contiguous().clone()  # what the bytes hold: the model's own tensors change next
        arr = array_from_numpy(t.numpy())
        if keep:
            keep_tensor(arr, t)
        items.append((key, arr))
    return array_record(items)


def is_float(t: torch.Tensor) -> bool:
    return torch.is_floating_point(t) or torch.is_complex(t)


def weighted_average(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float], device: torch.device | str | None = None
) -> OrderedDict[str, torch.Tensor]:
    """sum_k p_k * state_k with p_k = weights_k / sum(weights); integer buffers: max.

    FedAvg (McMahan et al. 2017): w+ = sum_k (n_k / n) w_k. The float entries of each
    client are flattened into one vector and accumulated in float64 on ``device``
    (one add per client instead of one per tensor), in the given client order, so
    the result is the same on every engine; the result is on the CPU.
    """
    if not states:
        raise ValueError("weighted_average needs at least one state")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weighted_average: weights sum to {total}; need a positive total")
    probs = [float(w) / total for w in weights]
    first = states[0]
    float_keys = [k for k, v in first.items() if is_float(v)]
    dev = torch.device(device) if device is not None else torch.device("cpu")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    if float_keys:
        sizes = [first[k].numel() for k in float_keys]
        acc = torch.zeros(sum(sizes), dtype=torch.float64, device=dev)
        for p, st in zip(probs, states):
            flat = torch.cat([st[k].reshape(-1) for k in float_keys]).to(dev, torch.float64, non_blocking=True)
            acc.add_(flat, alpha=p)
        acc = acc.cpu()
        for k, piece in zip(float_keys, torch.split(acc, sizes)):
            out[k] = piece.view(first[k].shape).to(first[k].dtype)
    for key, v in first.items():
        if not is_float(v):
            out[key] = torch.stack([st[key] for st in states]).amax(dim=0)
    return OrderedDict((k, out[k]) for k in first)


def restore_dtypes(
    state: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
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
    """No NaN or inf in any float entry (a float64 sum is non-finite iff an entry is,
    short of finite weights near 1e308; no boolean mask per tensor)."""
    return all(math.isfinite(float(t.sum(dtype=torch.float64))) for t in state.values() if is_float(t))
