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

from fedsim.util.flower_compat import (
    NUMPY_STYPE,
    array_nbytes,
    array_record,
    kept_array,
    kept_template,
    numpy_array,
    take_tensor,
)

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


class PackedState(OrderedDict):
    """A state_dict whose float entries ``packed[0]`` are, in that order, the consecutive
    pieces of the one 1-D tensor ``packed[1]`` (an in-process reply's weights: one copy of
    the model, read by the server's screening, average and measures without another
    :func:`torch.cat`). Setting or deleting an entry forgets ``packed``."""

    packed: tuple[tuple[str, ...], torch.Tensor] | None = None

    def __setitem__(self, key, value) -> None:
        self.packed = None
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        self.packed = None
        super().__delitem__(key)


def float_vector(state: Mapping[str, torch.Tensor], keys: Sequence[str]) -> torch.Tensor:
    """The entries ``keys`` of ``state`` as one 1-D tensor, in order: the packed tensor
    itself (no copy: do not change it) for a :class:`PackedState` of those keys, else
    their concatenation."""
    packed = getattr(state, "packed", None)
    if packed is not None and packed[0] == tuple(keys):
        return packed[1]
    return torch.cat([state[k].reshape(-1) for k in keys])


def record_to_state(record: ArrayRecord) -> OrderedDict[str, torch.Tensor]:
    """ArrayRecord -> state_dict of CPU tensors: the caller's own (it may change them),
    except an in-process reply's (the local engine's), whose tensors its first reader
    shares with the record (no copy; do not change them in place: Flower's own
    aggregations may read the record's bytes later)."""
    out: OrderedDict[str, torch.Tensor] = PackedState()
    taken = set()
    for key, arr in record.items():
        kept = take_tensor(arr)
        if kept is not None:
            taken.add(key)
        out[key] = kept if kept is not None else torch.from_numpy(array_to_numpy(arr))
    packed = record.__dict__.get(_PACKED)
    if packed is not None and taken.issuperset(packed[0]):  # the entries are the vector's views
        out.packed = packed
    return out


_PACKED = "_fedsim_packed"


class PackedVector(tuple):
    """``(keys, flat)``: the packed entries of a kept record and their one 1-D tensor. It
    crosses a process boundary (``engine.workers``) as one numpy array, and the record's
    KeptArrays as views of it (:func:`_kept_piece`): a reply's weights are pickled once,
    and arrive packed."""

    def __new__(cls, keys: tuple[str, ...], flat: torch.Tensor) -> PackedVector:
        return super().__new__(cls, (keys, flat))

    def __reduce__(self) -> tuple:
        return _packed_vector, (self[0], self[1].numpy())


def _packed_vector(keys: tuple[str, ...], flat: np.ndarray) -> PackedVector:
    return PackedVector(keys, torch.from_numpy(flat))


def _kept_piece(packed: PackedVector, offset: int, shape: tuple[int, ...]) -> Array:
    """The KeptArray of ``packed``'s entry at ``offset``, as unpickled."""
    numel = math.prod(shape)
    piece = packed[1][offset : offset + numel].view(shape)
    return _kept_array(piece, (_kept_piece, (packed, offset, shape)))


def state_to_record(state: Mapping[str, torch.Tensor], keep: bool = False) -> ArrayRecord:
    """state_dict -> ArrayRecord (what Flower sends).

    ``keep`` (a reply that stays in the process: the local engine's): the float entries
    are copied once, into one new 1-D tensor (:class:`PackedState`), and each Array
    carries its piece, which the first :func:`record_to_state` takes; the bytes are made
    only if read (:class:`fedsim.util.flower_compat.KeptArray`). Measured in the
    cross-device round (``benchmarks/peers.py`` 1000x10: 100 clients of 10 MNIST images,
    simple-cnn; issue 34), a reply's arrays were copied twice (a clone, then its bytes)
    and its tensors concatenated twice more at the server (screening, average).
    """
    if keep:
        return Packer(state).record()
    return array_record((key, array_from_numpy(t.detach().cpu().numpy())) for key, t in state.items())


def _views(flat: torch.Tensor, like: list[torch.Tensor], sizes: list[int]) -> list[torch.Tensor]:
    """``flat`` cut into views shaped as ``like``'s tensors, in order: in one call of torch's
    own unflatten (the one DDP uses; 10 us for simple-cnn's ten entries against 26 us for a
    split and ten views, more inside a run), else by a split and views."""
    unflatten = getattr(torch._utils, "_unflatten_dense_tensors", None)
    if unflatten is not None:
        return list(unflatten(flat, like))
    return [p.view(t.shape) for p, t in zip(flat.split_with_sizes(sizes), like)]


class Packer:
    """``state_to_record(state, keep=True)`` again and again for a state whose tensors stay
    the same objects and change in place (a client's model, round after round of
    parties): which entries pack into the one vector, their sizes, shapes and Array
    metadata, and flat views of the tensors, found once. The float entries of the first
    float dtype are packed; the others are copied one by one."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self.keys = list(state)
        floats = [k for k, t in state.items() if is_float(t)]
        dtype = state[floats[0]].dtype if floats else None
        self.packed = tuple(k for k in floats if state[k].dtype == dtype)
        # views of the tensors themselves (detached, on their device), read at each record();
        # ``live``: they are views (a non-contiguous tensor's reshape is a copy, which
        # later records would not see change)
        self.sources = [state[k].detach().reshape(-1) for k in self.packed]
        self.live = all(state[k].is_contiguous() for k in self.packed)
        self.sizes = [state[k].numel() for k in self.packed]
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        # each entry's KeptArray template (dtype name, shape, .npy header, byte count)
        self.templates = [_template(state[k].detach().cpu()) for k in self.packed]
        self.sources_shaped = [state[k] for k in self.packed]  # the shapes _views cuts into
        self.others = {k: state[k] for k in self.keys if k not in set(self.packed)}

    def record(self) -> ArrayRecord:
        """The record of the tensors as they are now: one copy of the packed entries (on
        their device, then one transfer) cut into views, each carried by a KeptArray."""
        arrays: dict[str, Array] = {}
        vector = None
        if self.packed:
            vector = PackedVector(self.packed, torch.cat(self.sources).cpu())
            views = _views(vector[1], self.sources_shaped, self.sizes)
            for k, view, tmpl, offset in zip(self.packed, views, self.templates, self.offsets):
                arrays[k] = kept_array(tmpl, view, (_kept_piece, (vector, offset, tmpl["shape"])))
        for k, t in self.others.items():
            arrays[k] = _kept_array(t.detach().cpu().contiguous().clone())
        rec = array_record((k, arrays[k]) for k in self.keys)
        if vector is not None:
            rec.__dict__[_PACKED] = vector
        return rec


_KEPT_META: dict[tuple[torch.dtype, tuple[int, ...]], dict] = {}


def _template(t: torch.Tensor) -> dict:
    """The KeptArray template of ``t``'s (dtype, shape): once per (dtype, shape)."""
    key = (t.dtype, tuple(t.shape))
    tmpl = _KEPT_META.get(key)
    if tmpl is None:
        nd = t.numpy()
        header = _npy_header(nd)
        shape = tuple(int(s) for s in nd.shape)
        tmpl = _KEPT_META[key] = kept_template(_dtype_name(nd.dtype), shape, header, len(header) + nd.nbytes)
        if len(_KEPT_META) > 4096:
            _KEPT_META.clear()
    return tmpl


def _kept_array(t: torch.Tensor, reduce: tuple | None = None) -> Array:
    return kept_array(_template(t), t, reduce)


def record_nbytes(record: ArrayRecord) -> int:
    """``record.count_bytes()`` (bytes of its arrays and keys), without making the bytes of
    an in-process reply's arrays."""
    return sum(array_nbytes(arr) + len(key) for key, arr in record.items())


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
            # added as it is (float32 promoted inside the add, bit for bit the sum of its
            # float64 copy): no float64 copy of each reply (benchmarks/peers.py 1000x10)
            acc.add_(float_vector(st, float_keys).to(dev, non_blocking=True), alpha=p)
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
    packed = getattr(state, "packed", None)
    if packed is not None and len(packed[0]) == sum(1 for t in state.values() if is_float(t)):
        return math.isfinite(float(packed[1].sum(dtype=torch.float64)))  # one sum, not one an entry
    return all(math.isfinite(float(t.sum(dtype=torch.float64))) for t in state.values() if is_float(t))
