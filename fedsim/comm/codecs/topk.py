"""``topk``: top-k sparsification with error feedback (Stich et al. 2018; DGC, Lin et al. 2018).

Per tensor of n coordinates, the k = ceil(density n) largest |u_i| of u = (w_k - w) + e
are sent (int32 index, float32 value: 8 bytes each); e <- u - u_hat keeps the rest for
the next round (memory / error feedback: nothing is lost, only delayed). The values are
the coordinates' new weights w_i + u_i, so density 1 rebuilds w_k bit for bit.

``comm.momentum_correction`` m > 0 (DGC's momentum correction, off by default): the party
keeps a velocity V (client state) beside the residual, V <- m V + d, accumulates
e <- e + V and sends top-k of e; the sent coordinates are cleared in e and in V (DGC's
momentum factor masking).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.comm.codecs import STICH, Compressor, SparseParams, keep, register, sparse_decode, sparse_encode, top_k
from fedsim.util.params import hp

DGC = "Lin et al. 2018, Deep Gradient Compression"


@dataclass
class TopKParams(SparseParams):
    """``comm.*`` of top-k: a sparsifier's, and DGC's momentum correction."""

    momentum_correction: float = hp(
        0.0,
        ge=0,
        lt=1,
        help="DGC's momentum m on the update before the residual (V <- m V + d, e <- e + V); 0: off",
        source=DGC + " (0: off, as before the option)",
    )


@register
class TopK(Compressor):
    name = "topk"
    summary = (
        "top-k of each tensor's update (int32 index + float32 value), error feedback; "
        "with momentum_correction m > 0 DGC's velocity V <- m V + d per party, accumulated into the residual"
    )
    paper = STICH + "; " + DGC
    Params = TopKParams
    feedback = True

    def encode(self, params, updates, bases, gen):
        idx, vals = sparse_encode(updates, bases, top_k, params.density)
        return {"@idx": idx, "@val": vals}

    def decode(self, params, payload, bases):
        return sparse_decode(payload["@idx"], payload["@val"], bases, params.density)

    def check(self, cfg):
        if cfg.comm.momentum_correction > 0 and not cfg.comm.error_feedback:
            return "comm.momentum_correction accumulates into the error-feedback residual: set comm.error_feedback true"
        return super().check(cfg)

    def formula(self, params, sizes) -> int:
        return 8 * sum(keep(params.density, n) for n in sizes)
