"""The ClientApp's mod for client-side clipping: Flower's own mods, when the server asks.

``privacy.mode: client-fixed`` / ``client-adaptive`` clip each update on the client
with Flower's ``fixedclipping_mod`` / ``adaptiveclipping_mod`` (the latter also reports
whether it clipped, ``norm_bit``). The server's DP wrapper (:mod:`.central`) puts the
clipping norm and the mode into the round's config; without them (every other mode)
the message passes through untouched. The mod sits in every fedsim ClientApp, so the
same app serves ``flwr run .``, whose config the app cannot see when it is built.
"""

from __future__ import annotations

from flwr.app import Context, Message, MessageType
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod

from fedsim.config.schema import ExperimentConfig
from fedsim.privacy.central import MODE_KEY

_MODS = {"client-fixed": fixedclipping_mod, "client-adaptive": adaptiveclipping_mod}


def privacy_mod(msg: Message, context: Context, call_next) -> Message:
    """Run Flower's clipping mod of the mode the server's config names, if any."""
    if msg.metadata.message_type == MessageType.TRAIN and msg.has_content():
        config = msg.content.config_records.get("config")
        mod = _MODS.get(config.get(MODE_KEY)) if config is not None else None
        if mod is not None:
            return mod(msg, context, call_next)
    return call_next(msg, context)


def why_not_batched(cfg: ExperimentConfig) -> str | None:
    """Why the client side of ``cfg``'s privacy cannot train a cohort in lockstep (the
    batched engine, ``fedsim/engine/batched.py``), or None."""
    mode = cfg.privacy.mode
    if mode == "dpsgd":
        return "privacy.mode=dpsgd trains each party with Opacus's per-sample gradient hooks, one at a time"
    if mode in _MODS:
        return f"privacy.mode={mode} clips in the ClientApp's mods, which the batched path does not run"
    return None
