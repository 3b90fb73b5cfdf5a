"""Server rules on a round's replies, run between screening and the algorithm's ``aggregate``.

A :class:`ReplyRule` sees the screened replies of a round (decoded
:class:`~strategies.strategy.ClientOutcome` objects) and may replace the weights of some
of them before the algorithm aggregates. Two kinds plug in here, in this order:

1. an attack's model poisoning (``attacks/``): the malicious parties' replies are
   replaced at the server, where the cohort's honest updates are known (ALIE, IPM);
2. a defence (:mod:`strategies.defences`): norm bounding or centred clipping of every
   update, so that any averaging algorithm (FedAvg, FedProx, FedAvgM, ...) aggregates
   the bounded updates.

A rule is a :class:`~strategies.extension.ServerExtension`: the run composes its rules
with the strategy when it builds it (``fedsim/inputs/adversary.py: server_rules``).

Rules work on updates d_k = w_k - w (w: the weights sent this round) over the
trainable parameters (``FederationSetup.is_param``) that the replies carry: a
personalised algorithm's replies hold only its shared layers (its personal layers
never leave the party), so its updates live in the space of the shared entries.
Buffers (BatchNorm's running statistics, step counters) pass unchanged: a flipped or
clipped running variance is not an update and can turn negative.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .arrays import is_float
from .extension import ReplyRule
from .strategy import ClientOutcome, FederationSetup

__all__ = ["ReplyRule", "UpdateSpace", "scale_update", "trainable_keys", "update_norms"]


class UpdateSpace:
    """Flat update vectors d_k = w_k - w over the trainable float entries of a round.

    Float32 vectors on the server's device (one (K, P) matrix for K replies); a reply
    rebuilt from a vector is computed as w + d in float64 and cast back, key by key.
    """

    def __init__(
        self,
        global_state: Mapping[str, torch.Tensor],
        setup: FederationSetup,
        outcomes: Sequence[ClientOutcome] = (),
        keys: Sequence[str] | None = None,
    ) -> None:
        self.global_state = global_state
        self.keys = list(keys) if keys is not None else trainable_keys(global_state, setup, outcomes)
        self.sizes = [global_state[k].numel() for k in self.keys]
        self.device = torch.device(setup.device)
        self.base = self._flat(global_state)

    def _flat(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if not self.keys:
            return torch.zeros(0, device=self.device)
        return torch.cat([state[k].reshape(-1).to(self.device, torch.float32) for k in self.keys])

    @property
    def dim(self) -> int:
        return int(sum(self.sizes))

    def vector(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """d = w_k - w, shape (P,)."""
        return self._flat(state) - self.base

    def matrix(self, outcomes: Sequence[ClientOutcome]) -> torch.Tensor:
        """The updates of ``outcomes`` as rows, shape (K, P)."""
        if not outcomes:
            return torch.zeros((0, self.dim), device=self.device)
        return torch.stack([self.vector(o.state) for o in outcomes])

    def state_from(self, template: Mapping[str, torch.Tensor], update: torch.Tensor) -> OrderedDict[str, Any]:
        """``template`` with its trainable entries replaced by w + ``update``."""
        out = OrderedDict(template)
        for key, piece in zip(self.keys, torch.split(update.detach().to("cpu", torch.float64), self.sizes)):
            g = self.global_state[key]
            out[key] = (g.to(torch.float64) + piece.view(g.shape)).to(g.dtype)
        return out

    def replace(self, outcome: ClientOutcome, update: torch.Tensor) -> None:
        """Make ``outcome`` the reply w + ``update`` (its buffers stay as sent)."""
        outcome.replace_state(self.state_from(outcome.state, update))


def scale_update(
    outcome: ClientOutcome, global_state: Mapping[str, torch.Tensor], keys: Sequence[str], factor: float
) -> None:
    """Make ``outcome`` the reply w + factor (w_k - w) on ``keys``, computed in float64
    per entry (norm bounding's exact scaling)."""
    out = OrderedDict(outcome.state)
    for key in keys:
        g = global_state[key].to(torch.float64)
        out[key] = (g + factor * (out[key].to(torch.float64) - g)).to(global_state[key].dtype)
    outcome.replace_state(out)


def update_norms(outcomes: Sequence[ClientOutcome], global_state: Mapping[str, torch.Tensor], keys: Sequence[str]):
    """||w_k - w||_2 of each reply over ``keys``, accumulated in float64."""
    norms = []
    for o in outcomes:
        sq = 0.0
        for key in keys:
            sq += float(((o.state[key].to(torch.float64) - global_state[key].to(torch.float64)) ** 2).sum())
        norms.append(sq**0.5)
    return norms


def trainable_keys(
    global_state: Mapping[str, torch.Tensor], setup: FederationSetup, outcomes: Sequence[ClientOutcome] = ()
) -> list[str]:
    """The float entries of the model that are trainable parameters and that every reply
    of ``outcomes`` carries (the shared layers of a personalised algorithm)."""
    return [
        k
        for k, v in global_state.items()
        if is_float(v) and setup.is_param(k) and all(o.state is not None and k in o.state for o in outcomes)
    ]
