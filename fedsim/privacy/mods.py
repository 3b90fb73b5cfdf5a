"""The ClientApp's mod for client-side clipping: the privacy mode's own mod, when the server asks.

``privacy.mode: client-fixed`` / ``client-adaptive`` clip each update on the client
with Flower's ``fixedclipping_mod`` / ``adaptiveclipping_mod`` (the latter also reports
whether it clipped, ``norm_bit``): each mode declares its mod
(:meth:`fedsim.privacy.modes.PrivacyMode.client_mod`). The server's DP wrapper
(:mod:`.central`) puts the clipping norm and the mode into the round's config; without
them (every other mode) the message passes through untouched. The mod sits in every
fedsim ClientApp, so the same app serves ``flwr run .``, whose config the app cannot
see when it is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import Context, Message, MessageType

from fedsim.privacy.central import MODE_KEY
from fedsim.privacy.compat import CLIENT_SIDE, PER_SAMPLE
from fedsim.privacy.modes import PRIVACY_MODES
from fedsim.schema.experiment import ExperimentConfig


def privacy_mod(msg: Message, context: Context, call_next, params: Callable[[], Any] | None = None) -> Message:
    """Run the clipping mod of the mode the server's config names, if any; ``params()``
    gives the run's ``privacy.*`` (read only when a mode's mod runs)."""
    if msg.metadata.message_type == MessageType.TRAIN and msg.has_content():
        config = msg.content.config_records.get("config")
        name = config.get(MODE_KEY) if config is not None else None
        mode = PRIVACY_MODES.get(name) if isinstance(name, str) and name in PRIVACY_MODES else None
        mod = mode.client_mod(params() if params is not None else None) if mode is not None else None
        if mod is not None:
            return mod(msg, context, call_next)
    return call_next(msg, context)


def why_not_batched(cfg: ExperimentConfig) -> str | None:
    """Why the client side of ``cfg``'s privacy cannot train a cohort in lockstep (the
    batched engine, ``fedsim/engine/batched.py``), or None."""
    mode = cfg.privacy.mode
    if mode in PER_SAMPLE:
        return f"privacy.mode={mode} trains each party with Opacus's per-sample gradient hooks, one at a time"
    if mode in CLIENT_SIDE:
        return f"privacy.mode={mode} clips in the ClientApp's mods, which the batched path does not run"
    return None
