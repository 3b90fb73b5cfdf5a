"""The compressed broadcast (``comm.downlink``): the server's update through the run's codec.

Sattler et al. 2019 (STC) compress both directions: after aggregating, the server
encodes the global update with its own error-feedback residual e_s,

    u = (w_agg - w^t) + e_s,  payload_t = encode(u),  w^{t+1} = w^t + decode(payload_t),
    e_s <- u - decode(payload_t),

so the global model *is* what the broadcasts add up to (w^0 plus every decoded
payload): every party that applies them holds the same model, and the server loses
nothing, only delays it (sum_t decode(payload_t) + e_s = sum_t (w_agg - w^t)). The
residual is server state, checkpointed: a resume is byte-equal.

With partial participation a party that missed rounds must catch up (Sattler et al.
2019's weight update caching for partial client participation: the server keeps the
recent updates and a returning party downloads the sum of those it missed, or the
whole model when that is smaller). fedsim charges the missed broadcasts' own bytes, an
upper bound of their sum's (its support is at most their union), and simulates the
rest exactly without
keeping a model per party: the message still hands the party the current model (the
same weights the catch-up would rebuild), and the bytes it is charged
(``bytes_down`` per reply and per round, the totals, the clock's download time) are
those of the broadcasts' records since it was last current, or the full model's on
first contact or when that is smaller; the rest of the message (the config, an
algorithm's extra records) counts as it is.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import RecordDict

from fedsim.comm.update import KEYS_RECORD, UpdateCodec
from fedsim.util.seeding import torch_generator
from strategies.arrays import record_to_state
from strategies.extension import Aggregator, ServerExtension
from strategies.rounds import Aggregate, ClientOutcome
from strategies.strategy import content_bytes

#: the checkpoint entries of the broadcast's state
STATE_KEY = "comm.downlink."


class Broadcast(ServerExtension):
    """The server's compressed broadcast (module docstring)."""

    def __init__(self, codec: UpdateCodec, seed: int) -> None:
        self.codec, self.seed = codec, seed
        #: e_s: the server's error-feedback residual (the codec's RESIDUAL keys)
        self.residual: dict[str, torch.Tensor] = {}
        #: the bytes of broadcast t's records (payload, entries sent as they are, names), t = 1, 2, ...
        self.sizes: list[int] = []
        #: party -> the broadcasts it has applied (the model version it holds)
        self.synced: dict[int, int] = {}

    def aggregate(
        self,
        inner: Aggregator,
        server_round: int,
        global_state: Mapping[str, torch.Tensor],
        outcomes: list[ClientOutcome],
    ) -> Aggregate:
        """The new global model w^t + decode(payload_t) instead of ``inner``'s w_agg."""
        agg = inner.aggregate(server_round, global_state, outcomes)
        weights = OrderedDict((k, agg.state[k]) for k in global_state if k in agg.state)
        gen = torch_generator(self.seed, "compress-down", server_round)
        enc = self.codec.encode(weights, global_state, self.residual, gen, server_round)
        content = RecordDict({"arrays": enc.arrays})
        if enc.keys is not None:
            content[KEYS_RECORD] = enc.keys
        nbytes = content_bytes(content)
        self.codec.decode(content, global_state, server_round)  # what every party rebuilds from the payload
        new = record_to_state(content.array_records["arrays"])
        if self.codec.feedback:
            self.residual = dict(enc.residual)
        del self.sizes[server_round - 1 :]
        self._pad(server_round - 1)
        self.sizes.append(nbytes)
        return Aggregate(new, {**agg.metrics, "bytes_broadcast": nbytes})

    def _pad(self, version: int) -> None:
        """Rounds that changed nothing (no reply aggregated) broadcast nothing."""
        self.sizes.extend([0] * (version - len(self.sizes)))

    def download(self, version: int, parties: list[int], sizes: list[int], model_bytes: int) -> list[int]:
        """What each party downloads to hold model ``version``: the broadcasts since the
        version it holds, or the full model on first contact or when that is smaller."""
        self._pad(version)
        out = []
        for party, size in zip(parties, sizes):
            held = self.synced.get(party)
            catch_up = model_bytes if held is None else min(model_bytes, sum(self.sizes[held:version]))
            out.append(size - model_bytes + catch_up)
            self.synced[party] = version
        return out

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            STATE_KEY + "residual": dict(self.residual),
            STATE_KEY + "sizes": list(self.sizes),
            STATE_KEY + "synced": {str(p): v for p, v in self.synced.items()},
        }

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        if STATE_KEY + "sizes" not in state:
            return
        self.residual = dict(state[STATE_KEY + "residual"])
        self.sizes = [int(n) for n in state[STATE_KEY + "sizes"]]
        self.synced = {int(p): int(v) for p, v in state[STATE_KEY + "synced"].items()}


def broadcast_for(cfg: Any, codec: UpdateCodec | None) -> tuple[Broadcast, ...]:
    """The run's compressed broadcast with ``comm.downlink`` (its own codec instance:
    no momentum correction, a server-side residual), else nothing."""
    if codec is None or not getattr(cfg.comm, "downlink", False):
        return ()
    down = UpdateCodec(codec.codec, codec.params, codec.param_keys)
    down.momentum = 0.0  # DGC's momentum correction is the parties' (their optimiser's); the server has none
    return (Broadcast(down, cfg.seed),)
