"""``sign``: scaled sign compression with error feedback (EF-SignSGD, Karimireddy et al. 2019).

Per tensor of n coordinates: C(u) = (||u||_1 / n) sign(u) (one bit a coordinate, one
float32 scale a tensor), and e <- u - C(u) carries the rest to the next round. The
scaled sign is a delta-compressor (their Lemma 8), which is what error feedback needs.
"""

from __future__ import annotations

import math

import torch

from fedsim.comm.codecs import KARIMIREDDY, Compressor, FeedbackParams, pack_bits, register, scales, unpack_bits


@register
class Sign(Compressor):
    name = "sign"
    summary = "one bit a coordinate, a float32 scale mean(abs(u)) a tensor, error feedback"
    paper = KARIMIREDDY
    Params = FeedbackParams
    feedback = True

    def encode(self, params, updates, bases, gen):
        s = [u.abs().mean() if u.numel() else torch.tensor(0.0) for u in updates]
        return {"@bits": pack_bits(torch.cat(updates) >= 0), "@scale": scales(s)}

    def decode(self, params, payload, bases):
        sizes = [w.numel() for w in bases]
        signs = unpack_bits(payload["@bits"], sum(sizes)).double() * 2 - 1
        out, at = [], 0
        for n, st in zip(sizes, payload["@scale"].double()):
            out.append(signs[at : at + n] * st)
            at += n
        return out

    def formula(self, params, sizes) -> int:
        return math.ceil(sum(sizes) / 8) + 4 * len(sizes)
