"""``none``: the reply carries the trained weights as they are (the default)."""

from __future__ import annotations

from fedsim.comm.codecs import Compressor, register
from fedsim.schema.sections import CommConfig


@register
class NoCompression(Compressor):
    name = "none"
    summary = "the weights as they are, float32 (what every run sent before compressors)"
    paper = "-"
    Params = CommConfig
    lossy = False

    def formula(self, params, sizes) -> int:
        return 4 * sum(sizes)
