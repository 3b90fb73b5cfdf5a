"""``sign``: scaled sign compression with error feedback (EF-SignSGD, Karimireddy et al. 2019).

Per tensor of n coordinates: C(u) = (||u||_1 / n) sign(u) (one bit a coordinate, one
float32 scale a tensor; the whole update's signs packed in one byte array followed by
the scales, as signSGD implementations send them), and e <- u - C(u) carries the rest
to the next round. The scaled sign is a delta-compressor (their Lemma 8), which is
what error feedback needs.
"""

from __future__ import annotations

import math

import numpy as np
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
        # one byte array: the update's signs, 8 a byte, then the tensors' float32 scales
        # (little-endian); one .npy header and one name instead of two (134 bytes a reply)
        bits = pack_bits(torch.cat(updates) >= 0)
        return {"@sign": np.concatenate([bits, scales(s).astype("<f4").view(np.uint8)])}

    def decode(self, params, payload, bases):
        sizes = [w.numel() for w in bases]
        buf = payload["@sign"].numpy()
        nbits = math.ceil(sum(sizes) / 8)
        signs = unpack_bits(torch.from_numpy(buf[:nbits].copy()), sum(sizes)).double() * 2 - 1
        scale = torch.from_numpy(np.frombuffer(buf[nbits:].tobytes(), dtype="<f4").astype(np.float64))
        out, at = [], 0
        for n, st in zip(sizes, scale):
            out.append(signs[at : at + n] * st)
            at += n
        return out

    def formula(self, params, sizes) -> int:
        return math.ceil(sum(sizes) / 8) + 4 * len(sizes)
