"""Compressors (``comm.compressor``): plug-ins that encode a model update for the wire.

A compressor is one file of this package (found on first use: no import line anywhere)
with a :class:`Compressor` subclass decorated with :func:`register`. It declares its
``comm.*`` keys in ``Params`` (a subclass of :class:`fedsim.schema.sections.CommConfig`)
and maps the update u = w_k - w (+ the error-feedback residual) of every floating-point
entry the reply carries, one float64 vector a tensor, to named arrays (the payload that
travels in the Flower message: indices, values, scales) and back:

* ``encode(params, updates, bases, gen) -> {name: ndarray}``; ``bases`` are the global
  model's entries w (float32), so a sparsifier may send the new values w_i + u_i of its
  coordinates (4 bytes like u_i) and a lossless setting rebuilds w_k bit for bit;
* ``decode(params, payload, bases) -> updates`` (float64), what the server adds to w;
* ``formula(params, sizes)``: the bytes the payload's arrays hold (tests compare it with
  what Flower counts).

``lossy = False`` (``none``) leaves the reply as it is. ``feedback``: the codec keeps what
it did not send (Stich et al. 2018; Karimireddy et al. 2019) when ``error_feedback``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

import strategies
from fedsim.schema.sections import CommConfig
from fedsim.util.params import hp
from fedsim.util.plugins import Plugin, Registry

Payload = dict[str, np.ndarray]

STICH = "Stich, Cordonnier, Jaggi 2018, Sparsified SGD with Memory"
KARIMIREDDY = "Karimireddy et al. 2019, Error Feedback Fixes SignSGD and other Gradient Compression Schemes"


@dataclass
class FeedbackParams(CommConfig):
    """``comm.*`` of a codec with error feedback: the residual on or off."""

    error_feedback: bool = hp(
        True,
        help="add what the previous rounds did not send (kept per party in the client state) before encoding",
        source=STICH,
    )


@dataclass
class SparseParams(FeedbackParams):
    """``comm.*`` of a sparsifier: the share of each tensor's coordinates sent."""

    density: float = hp(0.01, gt=0, le=1, help="k / n: the share of each tensor's coordinates sent", source=STICH)


class Compressor(Plugin):
    """One codec (module docstring)."""

    Params: type = CommConfig
    lossy: ClassVar[bool] = True
    feedback: ClassVar[bool] = False

    def uses_feedback(self, params: Any) -> bool:
        """Whether a run with ``params`` keeps a residual per party."""
        return self.feedback and bool(getattr(params, "error_feedback", False))

    def at_round(self, params: Any, server_round: int | None) -> Any:
        """The parameters round ``server_round`` encodes with (a schedule: DGC's density
        warm-up); ``params`` themselves by default and when the round is not given."""
        return params

    def encode(
        self, params: Any, updates: list[torch.Tensor], bases: list[torch.Tensor], gen: torch.Generator
    ) -> Payload:
        raise NotImplementedError

    def decode(self, params: Any, payload: Mapping[str, torch.Tensor], bases: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def formula(self, params: Any, sizes: Sequence[int]) -> int:
        """The bytes of the payload's arrays for tensors of ``sizes`` elements."""
        raise NotImplementedError

    def check(self, cfg: Any) -> str | None:
        if not self.lossy:
            return None
        why = strategies.get(cfg.strategy.name).compression_refusal
        if why:
            return f"comm.compressor '{self.name}' with strategy '{cfg.strategy.name}': {why}; use comm.compressor none"
        return None


# ------------------------------------------------------------------ shared pieces


def split(flat: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """``flat`` cut into consecutive pieces of ``sizes``."""
    return list(torch.split(flat, list(sizes)))


def pack_bits(bits: torch.Tensor) -> np.ndarray:
    """Booleans as bits, 8 a byte (``np.packbits``): ceil(n / 8) bytes."""
    return np.packbits(bits.numpy().astype(np.uint8))


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` booleans of :func:`pack_bits`."""
    return torch.from_numpy(np.unpackbits(packed.numpy())[:n].astype(bool))


def keep(density: float, n: int) -> int:
    """k = ceil(density * n), at least 1: the coordinates a sparsifier sends of n."""
    return max(1, min(n, math.ceil(density * n - 1e-9)))


def scales(values: list[torch.Tensor]) -> np.ndarray:
    """One float32 scale a tensor."""
    return torch.tensor([float(v) for v in values], dtype=torch.float32).numpy()


def sparse_encode(
    updates: list[torch.Tensor], bases: list[torch.Tensor], pick: Any, density: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (int32, per tensor) and the new values w_i + u_i (float32) of the
    coordinates ``pick(u, k)`` chooses in each tensor: the server holds w, so the values
    cost what u_i would, and density 1 rebuilds w_k exactly."""
    idx, vals = [], []
    for u, w in zip(updates, bases):
        i = pick(u, keep(density, u.numel())).sort().values
        idx.append(i.to(torch.int32))
        vals.append((w[i].double() + u[i]).to(torch.float32))
    return torch.cat(idx).numpy(), torch.cat(vals).numpy()


def sparse_decode(
    idx: torch.Tensor, vals: torch.Tensor, bases: list[torch.Tensor], density: float
) -> list[torch.Tensor]:
    """The updates :func:`sparse_encode` sent: zero but at the indices, v_i - w_i there."""
    out, at = [], 0
    for w in bases:
        k = keep(density, w.numel())
        i, v = idx[at : at + k].long(), vals[at : at + k].double()
        u = torch.zeros(w.numel(), dtype=torch.float64)
        u[i] = v - w[i].double()
        out.append(u)
        at += k
    return out


def top_k(u: torch.Tensor, k: int) -> torch.Tensor:
    """The indices of the k largest |u_i| (DGC's and Stich's top-k)."""
    return torch.topk(u.abs(), k, sorted=False).indices


#: the compressors: the modules of fedsim/comm/codecs, listed in this order (then any other file's)
COMPRESSORS: Registry[Compressor] = Registry(
    "compressor",
    "fedsim.comm.codecs",
    section="comm",
    chooser="compressor",
    base=CommConfig,
    ordered=True,
    first=("none", "fp16", "bf16", "uniform8", "qsgd", "topk", "randk", "sign", "stc"),
)


def register(cls: type[Compressor]) -> type[Compressor]:
    """Class decorator: make a codec available to ``comm.compressor``."""
    return COMPRESSORS.register(cls)


def get(name: str) -> Compressor:
    return COMPRESSORS.get(name)


def available() -> list[str]:
    return COMPRESSORS.available()


__all__ = [
    "COMPRESSORS",
    "Compressor",
    "FeedbackParams",
    "Payload",
    "SparseParams",
    "available",
    "get",
    "register",
]
