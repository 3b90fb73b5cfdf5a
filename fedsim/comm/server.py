"""The server's decoder: an extension of the strategy's round (``strategies/extension.py``)
that rebuilds each encoded reply (:meth:`fedsim.comm.update.UpdateCodec.decode`) as
soon as its bytes are counted, before it is screened: the attacks, the defences, the
robust aggregators, client-level DP and the algorithm all see decoded replies."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from flwr.app import RecordDict

from fedsim.comm.update import UpdateCodec
from strategies.extension import ServerExtension


class UpdateDecoder(ServerExtension):
    """Decodes the round's encoded replies (module docstring)."""

    def __init__(self, codec: UpdateCodec) -> None:
        self.codec = codec

    def decode_reply(self, server_round: int, global_state: Mapping[str, torch.Tensor], content: RecordDict) -> None:
        self.codec.decode(content, global_state, server_round)
