"""What one round of the server is made of: the decoded replies (:class:`ClientOutcome`),
the new global state (:class:`Aggregate`), the failures, the record of the whole round
(:class:`RoundLog`), how the server samples and screens (:class:`FederationSetup`)
and what its caller does around each round (:class:`RoundHooks`).

Shared by the strategy (``strategies/strategy.py``, which re-exports them) and the
extensions of its round (``strategies/extension.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import Message

from .arrays import state_to_record


@dataclass
class ClientOutcome:
    """One client's reply, decoded once for aggregation and for the run records."""

    party: int
    node_id: int
    num_examples: int
    metrics: dict[str, float]
    state: OrderedDict[str, torch.Tensor] | None = None
    records: dict[str, OrderedDict[str, torch.Tensor]] = field(default_factory=dict)
    bytes_up: int = 0
    #: bytes of the message the party was sent this round (its download)
    bytes_down: int = 0
    #: the reply as received (for strategies that aggregate through Flower's own chain)
    message: Message | None = None
    #: replaced by an attack's model poisoning at the server (a malicious party's reply)
    poisoned: bool = False

    def replace_state(self, state: OrderedDict[str, torch.Tensor]) -> None:
        """Replace the reply's weights (a reply rule: an attack, a defence), in the decoded
        state and in the message, which Flower's own aggregations read."""
        self.state = state
        if self.message is not None:
            self.message.content["arrays"] = state_to_record(state)


@dataclass
class Aggregate:
    """What :meth:`FedsimStrategy.aggregate` returns: the new global state and the
    values the server half computed this round (recorded in ``metrics.jsonl``)."""

    state: OrderedDict[str, torch.Tensor]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Failure:
    party: int
    reason: str
    stage: str = "train"


@dataclass
class RoundLog:
    """Everything one round did, for the run's records."""

    round: int
    #: the global weights sent this round, and the aggregate (the new global weights)
    global_state: OrderedDict[str, torch.Tensor] | None = None
    agg_state: OrderedDict[str, torch.Tensor] | None = None
    sampled: list[int] = field(default_factory=list)
    outcomes: list[ClientOutcome] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    eval_sampled: list[int] = field(default_factory=list)
    eval_outcomes: list[ClientOutcome] = field(default_factory=list)
    bytes_down: int = 0
    bytes_up: int = 0
    eval_metrics: dict[str, float] = field(default_factory=dict)
    #: values the server half computes (FedNova's tau_eff), recorded in metrics.jsonl
    server_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RoundHooks:
    """What the caller of :meth:`FedsimStrategy.start` does around each round.

    ``after_aggregate(log)``: the train replies are aggregated (and the new model is
    finite): the parties in ``log.outcomes`` may keep the state they computed.
    ``after_round(log)``: the round is complete; return True to stop the run early.
    """

    after_aggregate: Callable[[RoundLog], None] | None = None
    after_round: Callable[[RoundLog], bool | None] | None = None


@dataclass
class FederationSetup:
    """How the server samples and screens; bound before ``start``."""

    seed: int
    node_of_party: Mapping[int, int]
    fraction_fit: float = 1.0
    fraction_evaluate: float = 0.0
    min_fit_clients: int = 1
    max_failure_fraction: float = 1.0
    #: state_dict keys of trainable parameters (not buffers); None = every float entry
    param_keys: frozenset[str] | None = None
    #: where the server aggregates (the run's device: flattened tensors on the GPU)
    device: str = "cpu"
    #: parties that never train nor validate (``federation.holdout_parties``)
    holdout: frozenset[int] = frozenset()
    #: parties with no validation sample (one sample with ``data.val_fraction``): never evaluated
    no_validation: frozenset[int] = frozenset()
    #: raises when a round's failures are not the clients' but the run's (a full disk
    #: on the machine that writes the client state): the round must not be aggregated
    check_failures: Callable[[int, list[Failure]], None] | None = None
    #: ``selection.*``: the client selector and its parameters (None: uniform)
    selection: Any = None
    #: training samples of every party (index = party id): what selectors weigh by
    party_sizes: Sequence[int] = ()

    def is_param(self, key: str) -> bool:
        return self.param_keys is None or key in self.param_keys

    @property
    def n_training(self) -> int:
        """The parties that train (held-out ones never do): N of FedDyn's and FedDC's means."""
        return len(self.node_of_party) - len(self.holdout)
