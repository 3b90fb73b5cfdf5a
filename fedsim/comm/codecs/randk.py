"""``randk``: random-k sparsification with error feedback (Stich et al. 2018).

Per tensor, k = ceil(density n) coordinates drawn uniformly without replacement (from
the seed, the round and the party) are sent as int32 index + float32 value; the
residual e <- u - u_hat keeps the others (Stich et al.'s rand_k with memory, unscaled).
"""

from __future__ import annotations

import torch

from fedsim.comm.codecs import STICH, Compressor, SparseParams, keep, register, sparse_decode, sparse_encode


@register
class RandK(Compressor):
    name = "randk"
    summary = "k random coordinates of each tensor's update, error feedback"
    paper = STICH
    Params = SparseParams
    feedback = True

    def encode(self, params, updates, bases, gen):
        def pick(u: torch.Tensor, k: int) -> torch.Tensor:
            return torch.randperm(u.numel(), generator=gen)[:k]

        idx, vals = sparse_encode(updates, bases, pick, params.density)
        return {"@idx": idx, "@val": vals}

    def decode(self, params, payload, bases):
        return sparse_decode(payload["@idx"], payload["@val"], bases, params.density)

    def formula(self, params, sizes) -> int:
        return 8 * sum(keep(params.density, n) for n in sizes)
