"""``stc``: sparse ternary compression with error feedback (Sattler et al. 2019).

Per tensor: the k = ceil(density n) largest |u_i| of u = (w_k - w) + e, each sent as
mu sign(u_i) with mu = mean of those |u_i| (their Algorithm 1): int32 indices, one bit a
sign, one float32 mu a tensor; e <- u - u_hat. (The paper codes the index gaps with
Golomb codes; fedsim sends plain int32 indices, an upper bound on those bytes.)

Sattler et al. compress both directions; here the broadcast is compressed with
``comm.downlink: true`` (``fedsim/comm/downlink.py``: the server's update through the
same codec with its own residual). The key is common to every codec and keeps one
default, false (a key shared by the codecs keeps the common default: the registry
checks it), so STC as the paper runs it is ``comm.compressor: stc`` with
``comm.downlink: true``.
"""

from __future__ import annotations

import math

import torch

from fedsim.comm.codecs import (
    Compressor,
    SparseParams,
    keep,
    pack_bits,
    register,
    scales,
    top_k,
    unpack_bits,
)

SATTLER = "Sattler et al. 2019, Robust and Communication-Efficient Federated Learning from Non-IID Data"


@register
class Stc(Compressor):
    name = "stc"
    summary = "top-k, ternary (mu * sign) values, error feedback"
    paper = SATTLER
    Params = SparseParams
    feedback = True

    def encode(self, params, updates, bases, gen):
        idx, signs, mus = [], [], []
        for u in updates:
            i = top_k(u, keep(params.density, u.numel())).sort().values
            idx.append(i.to(torch.int32))
            signs.append(u[i] >= 0)
            mus.append(u[i].abs().mean())
        return {"@idx": torch.cat(idx).numpy(), "@bits": pack_bits(torch.cat(signs)), "@mu": scales(mus)}

    def decode(self, params, payload, bases):
        ks = [keep(params.density, w.numel()) for w in bases]
        signs = unpack_bits(payload["@bits"], sum(ks)).double() * 2 - 1
        out, at = [], 0
        for w, k, mu in zip(bases, ks, payload["@mu"].double()):
            u = torch.zeros(w.numel(), dtype=torch.float64)
            u[payload["@idx"][at : at + k].long()] = signs[at : at + k] * mu
            out.append(u)
            at += k
        return out

    def formula(self, params, sizes) -> int:
        k = sum(keep(params.density, n) for n in sizes)
        return 4 * k + math.ceil(k / 8) + 4 * len(sizes)
