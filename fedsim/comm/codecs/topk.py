"""``topk``: top-k sparsification with error feedback (Stich et al. 2018; DGC, Lin et al. 2018).

Per tensor of n coordinates, the k = ceil(density n) largest |u_i| of u = (w_k - w) + e
are sent (int32 index, float32 value: 8 bytes each); e <- u - u_hat keeps the rest for
the next round (memory / error feedback: nothing is lost, only delayed). The values are
the coordinates' new weights w_i + u_i, so density 1 rebuilds w_k bit for bit.
"""

from __future__ import annotations

from fedsim.comm.codecs import STICH, Compressor, SparseParams, keep, register, sparse_decode, sparse_encode, top_k


@register
class TopK(Compressor):
    name = "topk"
    summary = "top-k of each tensor's update (int32 index + float32 value), error feedback"
    paper = STICH + "; Lin et al. 2018, Deep Gradient Compression"
    Params = SparseParams
    feedback = True

    def encode(self, params, updates, bases, gen):
        idx, vals = sparse_encode(updates, bases, top_k, params.density)
        return {"@idx": idx, "@val": vals}

    def decode(self, params, payload, bases):
        return sparse_decode(payload["@idx"], payload["@val"], bases, params.density)

    def formula(self, params, sizes) -> int:
        return 8 * sum(keep(params.density, n) for n in sizes)
