"""A reply's update through a codec: encoded on the client, decoded on the server.

The client sends, for the entries its reply carries (a personalised algorithm's shared
ones), the update d_k = w_k - w of every floating-point entry through the run's codec
(:mod:`fedsim.comm.codecs`), computed in float64 (exact for float32 weights of like
magnitude), plus the error-feedback residual e when the codec keeps one:

    u = d_k + e,  payload = encode(u),  u_hat = decode(payload),  e <- u - u_hat

so that over any run sum_t u_hat_t + e_T = sum_t d_t (Stich et al. 2018's memory:
nothing is lost, only delayed). Only trainable parameters are encoded: buffers
(BatchNorm's running statistics and step counter) travel as they are, since a lossy
running variance can turn negative (FedBN with STC: NaN test loss in round 2). The message holds the payload's arrays (``arrays``) and the names of the
encoded entries (a ConfigRecord ``comm``: ``{"all": True}`` when they are all the model's
trainable float entries, in its order, which both sides know); the bytes a run records are Flower's count
of those records. The server rebuilds w_hat_k = w + u_hat in float64, cast to w's dtype.

The residual is the party's client state (keys under :data:`RESIDUAL`, beside the
algorithm's own; the store's plain ``load`` leaves them out), committed only when the
reply is aggregated, checkpointed with the store: a kill -9 and resume is byte-equal.
With ``comm.momentum_correction`` m > 0 (top-k, DGC) the party keeps a velocity V too
(keys under :data:`VELOCITY`): V <- m V + d_k, u = V + e, and V is cleared where a
coordinate was sent (DGC's momentum factor masking).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedsim.comm.codecs import COMPRESSORS, Compressor
from fedsim.rundir.store import EXTENSION_PREFIX
from strategies.arrays import array_from_numpy, is_float, record_to_state, state_to_record

#: the client-state keys of the residual: RESIDUAL + the model entry's name
RESIDUAL = EXTENSION_PREFIX + "comm.residual/"
#: the client-state keys of DGC's velocity (``comm.momentum_correction``): VELOCITY + the entry's name
VELOCITY = EXTENSION_PREFIX + "comm.velocity/"
#: the ConfigRecord of an encoded reply: the encoded entries' names, in order
KEYS_RECORD = "comm"
#: the names record's key when every entry of :meth:`UpdateCodec.default_keys` is encoded
ALL = "all"


@dataclass
class Encoded:
    """What :meth:`UpdateCodec.encode` makes: the reply's records and the new residual."""

    arrays: ArrayRecord
    #: the encoded entries' names; None when nothing was encoded (the reply is as it was)
    keys: ConfigRecord | None
    residual: dict[str, torch.Tensor]
    #: with error feedback: the decoded update u_hat per entry (float64), what the server adds to w
    sent: dict[str, torch.Tensor]


class UpdateCodec:
    """The run's codec with its ``comm.*`` parameters (module docstring)."""

    def __init__(self, codec: Compressor, params: Any, param_keys: Collection[str] | None = None) -> None:
        self.codec, self.params = codec, params
        self.feedback = codec.uses_feedback(params)
        #: DGC's momentum m (0: off); it works on the residual, so only with error feedback
        self.momentum = float(getattr(params, "momentum_correction", 0.0)) if self.feedback else 0.0
        #: the model's trainable entries, the ones encoded (None: every float entry)
        self.param_keys = frozenset(param_keys) if param_keys is not None else None

    def encoded(self, key: str, value: torch.Tensor) -> bool:
        return is_float(value) and (self.param_keys is None or key in self.param_keys)

    def default_keys(self, global_state: Mapping[str, torch.Tensor]) -> list[str]:
        """The entries a reply of the whole model encodes, in the model's order: what
        ``{ALL: True}`` in the reply's names record stands for."""
        return [k for k, v in global_state.items() if self.encoded(k, v)]

    def encode(
        self,
        weights: Mapping[str, torch.Tensor],
        global_state: Mapping[str, torch.Tensor],
        residual: Mapping[str, torch.Tensor] | None,
        gen: torch.Generator,
        server_round: int | None = None,
    ) -> Encoded:
        """The payload of a reply whose trained entries are ``weights`` (module docstring);
        ``server_round``: the round whose parameters a schedule gives (DGC's warm-up)."""
        params = self.codec.at_round(self.params, server_round)
        keys = [k for k, v in weights.items() if self.encoded(k, v)]
        bases = [global_state[k].detach().cpu().reshape(-1) for k in keys]
        updates, velocity = self.accumulate(keys, weights, bases, residual or {})
        payload = self.codec.encode(params, updates, bases, gen) if keys else {}
        arrays = ArrayRecord()
        for name, nd in payload.items():
            arrays[name] = array_from_numpy(nd)
        for k, v in weights.items():
            if not self.encoded(k, v):
                arrays[k] = array_from_numpy(v.detach().cpu().numpy())
        new_residual, sent = {}, []
        if self.feedback and keys:  # what the server will decode, for the residual: e <- u - u_hat
            sent = self.codec.decode(params, {n: torch.from_numpy(nd) for n, nd in payload.items()}, bases)
            for k, u, s in zip(keys, updates, sent):
                new_residual[RESIDUAL + k] = (u - s).to(torch.float32).view(weights[k].shape)
                if k in velocity:  # momentum factor masking: the sent coordinates start again
                    new_residual[VELOCITY + k] = velocity[k].masked_fill(s != 0, 0.0).float().view(weights[k].shape)
        # a reply with no trainable entry (``local`` shares nothing) is not encoded; one
        # that encodes every entry the server would (the usual case) says so in 4 bytes
        # instead of naming them (~120 bytes for the simple CNN: 2% of a sign reply)
        names = None
        if keys:
            names = ConfigRecord({ALL: True} if keys == self.default_keys(global_state) else {"keys": keys})
        return Encoded(arrays, names, new_residual, dict(zip(keys, sent)))

    def accumulate(
        self,
        keys: list[str],
        weights: Mapping[str, torch.Tensor],
        bases: list[torch.Tensor],
        state: Mapping[str, torch.Tensor],
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """The vectors to encode, u = d_k + e (with momentum correction V <- m V + d_k and
        u = V + e), and the new velocities V (float64, by entry; none without it)."""
        updates, velocity = [], {}
        for k, w in zip(keys, bases):
            u = weights[k].detach().cpu().reshape(-1).double() - w.double()
            if self.momentum and VELOCITY + k in state:
                u = u + self.momentum * state[VELOCITY + k].reshape(-1).double()
            if self.momentum:
                velocity[k] = u
            if self.feedback and RESIDUAL + k in state:
                u = u + state[RESIDUAL + k].reshape(-1).double()
            updates.append(u)
        return updates, velocity

    def decode(
        self, content: RecordDict, global_state: Mapping[str, torch.Tensor], server_round: int | None = None
    ) -> None:
        """Replace an encoded reply's records by the trained entries they stand for
        (``arrays`` as an uncompressed reply holds them); a reply that is not encoded
        (an error's) is left as it is."""
        if KEYS_RECORD not in content.config_records or "arrays" not in content.array_records:
            return
        names = content.config_records[KEYS_RECORD]
        keys = self.default_keys(global_state) if ALL in names else list(names["keys"])  # type: ignore[arg-type]
        payload = record_to_state(content.array_records["arrays"])
        bases = [global_state[k].reshape(-1) for k in keys]
        sent = self.codec.decode(self.codec.at_round(self.params, server_round), payload, bases) if keys else []
        state: OrderedDict[str, torch.Tensor] = OrderedDict()
        for k, w, u in zip(keys, bases, sent):
            ref = global_state[k]
            state[k] = (w.double() + u).to(ref.dtype).view(ref.shape)
        for k, v in payload.items():
            if not k.startswith("@"):
                state[k] = v
        content.pop(KEYS_RECORD)
        # in the model's order, as an uncompressed reply holds its entries
        content["arrays"] = state_to_record(OrderedDict((k, state[k]) for k in global_state if k in state))


def update_codec(comm: Any, param_keys: Collection[str] | None = None) -> UpdateCodec | None:
    """The codec of ``comm.*`` (the config's section), None for a lossless ``none``."""
    codec = COMPRESSORS.get(comm.compressor)
    return UpdateCodec(codec, comm, param_keys) if codec.lossy else None


def state_with_residual(
    rule_state: Mapping[str, torch.Tensor] | None,
    previous: Mapping[str, torch.Tensor] | None,
    residual: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """A party's new client state: the algorithm's (this round's, else what it had) and the residual."""
    if rule_state is None:
        rule_state = {k: v for k, v in (previous or {}).items() if not k.startswith(EXTENSION_PREFIX)}
    return {**rule_state, **residual}
