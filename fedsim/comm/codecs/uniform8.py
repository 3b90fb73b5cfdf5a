"""``uniform8``: uniform 8-bit quantisation of the update with one scale a tensor.

Per tensor t: s_t = max_i |u_i| / 127, q_i = round(u_i / s_t) in [-127, 127] (int8),
u_hat_i = s_t q_i: |u_hat_i - u_i| <= s_t / 2. Bytes: n + 4 a tensor.
"""

from __future__ import annotations

import torch

from fedsim.comm.codecs import Compressor, register, scales
from fedsim.schema.sections import CommConfig

LEVELS = 127


@register
class Uniform8(Compressor):
    name = "uniform8"
    summary = "uniform 8-bit quantisation, one float32 scale a tensor"
    paper = "e.g. Jacob et al. 2018, Quantization and Training of Neural Networks for Integer-Arithmetic-Only Inference"
    Params = CommConfig

    def encode(self, params, updates, bases, gen):
        s = [u.abs().max() / LEVELS if u.numel() else torch.tensor(0.0) for u in updates]
        s32 = scales(s)
        q = [
            torch.round(u / float(st)).clamp(-LEVELS, LEVELS) if st > 0 else torch.zeros_like(u)
            for u, st in zip(updates, s32)
        ]
        return {"@q": torch.cat(q).to(torch.int8).numpy(), "@scale": s32}

    def decode(self, params, payload, bases):
        out, at = [], 0
        for w, st in zip(bases, payload["@scale"].double()):
            out.append(payload["@q"][at : at + w.numel()].double() * st)
            at += w.numel()
        return out

    def formula(self, params, sizes) -> int:
        return sum(sizes) + 4 * len(sizes)
