"""``qsgd``: QSGD's stochastic quantisation of the update (Alistarh et al. 2017).

Per tensor v with s levels: Q_s(v_i) = ||v||_2 sign(v_i) xi_i(v, s), where with
l = floor(s |v_i| / ||v||_2), xi_i = (l + 1) / s with probability s |v_i| / ||v||_2 - l
and l / s otherwise. Unbiased (E Q_s(v) = v) with
E ||Q_s(v) - v||^2 <= min(n / s^2, sqrt(n) / s) ||v||^2 (their Lemma 3.1). The payload
holds sign(v_i) l_i (int8 for s <= 127, int16 for s <= 32767, else int32) and one
float32 norm a tensor; levels 127 is the usual "8-bit QSGD".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedsim.comm.codecs import Compressor, register, scales
from fedsim.schema.sections import CommConfig
from fedsim.util.params import hp

ALISTARH = "Alistarh et al. 2017, QSGD: Communication-Efficient SGD via Gradient Quantization and Encoding"


@dataclass
class QsgdParams(CommConfig):
    levels: int = hp(127, ge=1, le=65535, help="s: quantisation levels of |v_i| / ||v||_2", source=ALISTARH)


def level_dtype(levels: int) -> torch.dtype:
    """The smallest signed integer that holds sign * level."""
    return torch.int8 if levels <= 127 else torch.int16 if levels <= 32767 else torch.int32


def quantize(v: torch.Tensor, levels: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(signed levels, norms) of each row of ``v`` (the last dimension is one vector):
    Q_s(v) = norm * levels / s, stochastic rounding as in the module docstring."""
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True).to(torch.float32).double()
    r = torch.where(norm > 0, v.abs() / norm.clamp_min(1e-300) * levels, torch.zeros_like(v))
    low = torch.floor(r)
    up = torch.rand(v.shape, generator=gen, dtype=torch.float64) < (r - low)
    return (torch.sign(v) * (low + up)).to(level_dtype(levels)), norm.squeeze(-1)


@register
class Qsgd(Compressor):
    name = "qsgd"
    summary = "QSGD: s levels of abs(v_i) / norm(v), stochastic rounding (unbiased), a float32 norm a tensor"
    paper = ALISTARH
    Params = QsgdParams

    def encode(self, params, updates, bases, gen):
        parts = [quantize(u, params.levels, gen) for u in updates]
        return {"@q": torch.cat([q for q, _ in parts]).numpy(), "@norm": scales([n for _, n in parts])}

    def decode(self, params, payload, bases):
        out, at = [], 0
        for w, norm in zip(bases, payload["@norm"].double()):
            out.append(payload["@q"][at : at + w.numel()].double() * norm / params.levels)
            at += w.numel()
        return out

    def formula(self, params, sizes) -> int:
        return int(np.dtype(str(level_dtype(params.levels)).split(".")[-1]).itemsize) * sum(sizes) + 4 * len(sizes)
