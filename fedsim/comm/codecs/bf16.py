"""``bf16``: the update u = w_k - w cast to bfloat16 (2 bytes a coordinate, float32's range).

u_hat_i = bf16(u_i): relative error <= 2^-8. numpy has no bfloat16: the payload holds
its bits as int16.
"""

from __future__ import annotations

import torch

from fedsim.comm.codecs import Compressor, register, split
from fedsim.schema.sections import CommConfig


@register
class BFloat16(Compressor):
    name = "bf16"
    summary = "the update cast to bfloat16: 2 bytes a coordinate, float32's range"
    paper = "Kalamkar et al. 2019, A Study of BFLOAT16 for Deep Learning Training"
    Params = CommConfig

    def encode(self, params, updates, bases, gen):
        return {"@bf16": torch.cat(updates).to(torch.bfloat16).view(torch.int16).numpy()}

    def decode(self, params, payload, bases):
        return split(payload["@bf16"].view(torch.bfloat16).double(), [w.numel() for w in bases])

    def formula(self, params, sizes) -> int:
        return 2 * sum(sizes)
