"""``fp16``: the update u = w_k - w cast to IEEE half precision (2 bytes a coordinate).

u_hat_i = fp16(u_i): relative error <= 2^-11 within fp16's range (|u_i| <= 65504;
beyond it the reply holds inf and is screened out as non-finite).
"""

from __future__ import annotations

import torch

from fedsim.comm.codecs import Compressor, register, split
from fedsim.schema.sections import CommConfig


@register
class Half(Compressor):
    name = "fp16"
    summary = "the update cast to float16: 2 bytes a coordinate"
    paper = "IEEE 754 binary16 (e.g. Micikevicius et al. 2018, Mixed Precision Training)"
    Params = CommConfig

    def encode(self, params, updates, bases, gen):
        return {"@half": torch.cat(updates).to(torch.float16).numpy()}

    def decode(self, params, payload, bases):
        return split(payload["@half"].double(), [w.numel() for w in bases])

    def formula(self, params, sizes) -> int:
        return 2 * sum(sizes)
