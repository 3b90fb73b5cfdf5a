"""What a run adds to an algorithm's server round: :class:`ServerExtension`.

The algorithm's server half (:class:`~strategies.strategy.FedsimStrategy`) knows its
own round: sample, send, screen, aggregate. What the rest of the config adds (an
attack simulated at the server, a defence, differential privacy) is composed with it
when the strategy is built (:func:`strategies.build`), as Flower's
``DifferentialPrivacy*`` strategies wrap another strategy, instead of being set on it
afterwards and branched on in its code. Each extension takes part in the round at
fixed points, all of them in the order the extensions were given:

0. **download**: :meth:`ServerExtension.download` may set what each message of the
   round costs its party to receive (a compressed broadcast: the compressed updates a
   party missed, not the whole model the simulation hands it);
   **decode**: :meth:`ServerExtension.decode_reply` rebuilds a reply's content as it
   arrives, once its bytes are counted and before it is screened (a compressor's
   decoder: everything after it sees the decoded update);
1. **cohort**: :meth:`ServerExtension.sample` may draw the cohort instead of the
   strategy (client-level DP's Poisson sampling); the first that does wins; otherwise
   :meth:`ServerExtension.candidates` may narrow the parties the strategy's selector
   draws from and how many (the simulated clock: the online parties, over-selection),
   and hand the selector its view of the parties (``strategies/selection``);
2. **client config**: :meth:`ServerExtension.client_config` adds values to the train
   config, after the algorithm's own (the DP-SGD noise multiplier, a clipping norm);
3. **replies**: :meth:`ServerExtension.apply` sees the screened replies and may
   replace some (an attack's model poisoning, then a defence) or remove some from the
   list (the simulated clock: replies that arrive too late are not aggregated);
4. **aggregate**: :meth:`ServerExtension.aggregate` wraps what comes after it (the
   later extensions, then the algorithm's ``aggregate``): client-level DP clips and
   noises the cohort the algorithm aggregates;
5. **accepted**: :meth:`ServerExtension.after_aggregate` sees the new global model
   once it is accepted (finite);
6. **checkpoint**: :meth:`ServerExtension.checkpoint_state` entries are saved with
   the strategy's server state and handed back by
   :meth:`ServerExtension.load_checkpoint_state` on resume.

A :class:`ReplyRule` is the extension of attacks and defences: it acts on the replies
(steps 3 and 5) and checkpoints the attributes it names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from flwr.app import RecordDict

from .rounds import Aggregate, ClientOutcome, FederationSetup


class Aggregator(Protocol):
    """Anything that aggregates a round's replies: the algorithm's server half, or an
    extension wrapped around it."""

    def aggregate(
        self, server_round: int, global_state: Mapping[str, torch.Tensor], outcomes: list[ClientOutcome]
    ) -> Aggregate: ...


class ServerExtension:
    """A part of the server's round that is not the algorithm's (module docstring).

    Every hook does nothing by default, so an extension overrides only the steps it
    takes part in."""

    #: a round with no valid reply is still aggregated (a release that must not reveal
    #: that nobody was sampled); otherwise such a round keeps the global model as it is
    releases_empty_cohort: bool = False

    def sample(self, server_round: int, parties: list[int]) -> list[int] | None:
        """This round's cohort among ``parties`` (the sorted parties that train), or None
        to leave the draw to the strategy."""
        return None

    def candidates(self, server_round: int, parties: list[int], m: int) -> tuple[list[int], int, Any] | None:
        """The parties the selector may draw this round's ``m`` from (``parties``: those
        that train), how many it draws and what the selector may know of them (a
        :class:`~strategies.selection.ClockView`, or None); None: all of them, ``m``."""
        return None

    def client_config(self, server_round: int) -> dict[str, Any]:
        """Scalars added to the round's train config."""
        return {}

    def download(self, version: int, parties: list[int], sizes: list[int], model_bytes: int) -> list[int]:
        """The bytes each of ``parties`` receives: ``sizes`` are its messages' records as
        they are, ``model_bytes`` those of the model's record in each, which is the global
        model after ``version`` aggregations (round t's train messages: t - 1, its
        evaluation: t)."""
        return sizes

    def decode_reply(self, server_round: int, global_state: Mapping[str, torch.Tensor], content: RecordDict) -> None:
        """Rebuild a train reply's content in place (``global_state``: the weights sent)."""

    def apply(
        self,
        server_round: int,
        global_state: Mapping[str, torch.Tensor],
        outcomes: list[ClientOutcome],
        setup: FederationSetup,
    ) -> dict[str, float]:
        """Act on the screened replies before they are aggregated (replace some with
        :meth:`ClientOutcome.replace_state`); returns values for ``metrics.jsonl``."""
        return {}

    def aggregate(
        self,
        inner: Aggregator,
        server_round: int,
        global_state: Mapping[str, torch.Tensor],
        outcomes: list[ClientOutcome],
    ) -> Aggregate:
        """The round's aggregate, made by ``inner`` (what comes after this extension)."""
        return inner.aggregate(server_round, global_state, outcomes)

    def after_aggregate(
        self,
        server_round: int,
        global_state: Mapping[str, torch.Tensor],
        agg_state: Mapping[str, torch.Tensor],
        setup: FederationSetup,
    ) -> None:
        """Called once the round's aggregate is accepted (finite)."""

    def checkpoint_state(self) -> dict[str, Any]:
        """Entries of the strategy's checkpoint state (keys unique among the run's
        extensions; values as :meth:`FedsimStrategy.state_dict` can store them)."""
        return {}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Restore from a checkpoint's state (all its entries); an entry the checkpoint
        lacks (an older fedsim's) leaves what it would restore as it is."""


class ReplyRule(ServerExtension):
    """A server rule on a round's screened replies, run before the algorithm aggregates
    (an attack's model poisoning, a defence; helpers in ``strategies/replies.py``).

    ``apply`` may replace replies' weights with :meth:`ClientOutcome.replace_state`
    and returns values to record in ``metrics.jsonl``; ``after_aggregate`` sees the
    accepted new global model (centred clipping keeps its update as the next centre).
    The attributes in ``state_attributes`` are checkpointed as ``<key>.<attribute>``.
    """

    #: names the rule's state in checkpoints ("attack", "defence")
    key: str = "rule"
    state_attributes: tuple[str, ...] = ()

    def checkpoint_state(self) -> dict[str, Any]:
        return {f"{self.key}.{name}": getattr(self, name, None) for name in self.state_attributes}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        for name in self.state_attributes:
            if f"{self.key}.{name}" in state:
                setattr(self, name, state[f"{self.key}.{name}"])


class _Wrapped:
    """``extension`` around ``inner``: an :class:`Aggregator`."""

    def __init__(self, extension: ServerExtension, inner: Aggregator) -> None:
        self.extension, self.inner = extension, inner

    def aggregate(
        self, server_round: int, global_state: Mapping[str, torch.Tensor], outcomes: list[ClientOutcome]
    ) -> Aggregate:
        return self.extension.aggregate(self.inner, server_round, global_state, outcomes)


def wrap_aggregate(extensions: Sequence[ServerExtension], algorithm: Aggregator) -> Aggregator:
    """The round's aggregation: the first extension outermost, the algorithm innermost
    (an extension that does not wrap the aggregate passes the call on)."""
    inner = algorithm
    for ext in reversed(extensions):
        inner = _Wrapped(ext, inner)
    return inner
