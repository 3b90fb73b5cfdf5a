"""``topk``: top-k sparsification with error feedback (Stich et al. 2018; DGC, Lin et al. 2018).

Per tensor of n coordinates, the k = ceil(density n) largest |u_i| of u = (w_k - w) + e
are sent (int32 index, float32 value: 8 bytes each); e <- u - u_hat keeps the rest for
the next round (memory / error feedback: nothing is lost, only delayed). The values are
the coordinates' new weights w_i + u_i, so density 1 rebuilds w_k bit for bit.

``comm.momentum_correction`` m > 0 (DGC's momentum correction, off by default): the party
keeps a velocity V (client state) beside the residual, V <- m V + d, accumulates
e <- e + V and sends top-k of e; the sent coordinates are cleared in e and in V (DGC's
momentum factor masking).

``comm.warmup_rounds`` W > 0 (DGC's warm-up training, off by default): the density
decays exponentially over the first W rounds, max(density, 4^-t) in round t <= W, as
DGC's sparsity of 75%, 93.75%, 98.4375%, 99.6% over its first four epochs (one round
here is the parties' local epochs); the server decodes with the same round's density.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    warmup_rounds: int = hp(
        0,
        ge=0,
        help="DGC's warm-up: density max(density, 4^-t) in rounds t <= warmup_rounds (25%, 6.25%, ...); 0: off",
        source=DGC + " (4 epochs there; 0: off, Stich et al.'s top-k has none)",
    )


@register
class TopK(Compressor):
    name = "topk"
    summary = (
        "top-k of each tensor's update (int32 index + float32 value), error feedback; "
        "with momentum_correction m > 0 DGC's velocity V <- m V + d per party, accumulated into the residual; "
        "with warmup_rounds W > 0 DGC's density warm-up max(density, 4^-t) in rounds t <= W"
    )
    paper = STICH + "; " + DGC
    Params = TopKParams
    feedback = True

    def at_round(self, params, server_round):
        if not params.warmup_rounds or server_round is None or server_round > params.warmup_rounds:
            return params
        return replace(params, density=max(params.density, 4.0**-server_round))

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
