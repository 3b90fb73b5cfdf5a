"""The two halves every algorithm shares.

* :class:`ClientRule`: the client half. The local trainer calls its hooks:
  ``on_train_begin`` (load state, set up references), ``loss`` (extra loss terms),
  ``on_after_backward`` (gradient corrections), ``on_train_end`` (what goes back
  to the server and what stays with the party).
* :class:`FedsimStrategy`: a mixin placed before a Flower strategy class in the
  bases (``class FedAvg(FedsimStrategy, flwr...FedAvg)``). It keeps Flower's
  ``configure_*``/``aggregate_*`` chain and adds what a simulator needs:
  deterministic cohort sampling from the seed and the round, screening of failed
  or non-finite replies, a per-round log for the run records, resumable
  ``start(start_round=...)`` and a ``state_dict`` of the server state.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from flwr.supercore import log

from fedsim.seeding import derive

from .arrays import all_finite, record_to_state, restore_dtypes, state_to_record, weighted_average

# ------------------------------------------------------------------ client half


@dataclass
class TrainContext:
    """What a client rule sees of one party's local training."""

    model: torch.nn.Module
    global_state: Mapping[str, torch.Tensor]  # the weights received, on the device (rules with needs_global)
    config: Mapping[str, Any]  # the ConfigRecord sent by the server
    records: Mapping[str, Mapping[str, torch.Tensor]]  # extra ArrayRecords of the message
    state: dict[str, torch.Tensor] | None  # the party's persisted state, None at first
    party: int
    server_round: int
    device: torch.device
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    lr: float
    momentum: float
    build_model: Callable[[], torch.nn.Module]


@dataclass
class RuleOutput:
    """What a rule adds to the reply, and the state it leaves with the party."""

    metrics: dict[str, float] = field(default_factory=dict)
    records: dict[str, Mapping[str, torch.Tensor]] = field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None


class ClientRule:
    """Plain local training (FedAvg's client). Subclasses override the hooks."""

    #: whether the rule reads or writes the party's entry in the client-state store
    uses_state: bool = False
    #: whether the batched (vmap) engine path can run this rule; such a rule's
    #: ``on_train_end`` must not read ``ctx.model`` (that engine trains stacked copies
    #: of the weights and hands each client's to the reply directly)
    batchable: bool = True
    #: whether the rule reads ``ctx.global_state`` (a copy of the received weights on the
    #: device); rules that do not, get an empty mapping and save the copy
    needs_global: bool = False

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx

    def on_train_begin(self) -> None:
        """Called once the global weights are loaded, before the first step."""

    def on_evaluate_begin(self) -> None:
        """Called once the global weights are loaded, before local evaluation."""

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of one mini-batch."""
        logits = self.ctx.model(x)
        return self.ctx.criterion(logits, y), logits

    def on_after_backward(self) -> None:
        """Called between ``backward()`` and ``optimizer.step()``."""

    def on_train_end(self, steps: int) -> RuleOutput:
        """Called after the last step; ``steps`` is the number of optimiser steps."""
        return RuleOutput()

    @staticmethod
    def functional_penalty(
        config: Mapping[str, Any], params: Mapping[str, torch.Tensor], global_params: Mapping[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """The rule's extra loss term as a pure function of one client's parameters.

        The batched (``torch.func.vmap``) engine calls it inside the vmapped loss; a
        rule is ``batchable`` when its ``loss`` is the task loss plus this term and it
        has no gradient hook. None: no extra term.
        """
        return None


# ------------------------------------------------------------------ server half


class CohortFailure(RuntimeError):
    """More clients of a cohort failed than ``max_failure_fraction`` allows."""


class NonFiniteModel(RuntimeError):
    """The aggregated global model holds NaN or inf."""


@dataclass
class ClientOutcome:
    """One client's reply, decoded once for aggregation and for the run records."""

    party: int
    node_id: int
    num_examples: int
    metrics: dict[str, float]
    state: "OrderedDict[str, torch.Tensor] | None" = None
    records: dict[str, "OrderedDict[str, torch.Tensor]"] = field(default_factory=dict)
    bytes_up: int = 0


@dataclass
class Failure:
    party: int
    reason: str
    stage: str = "train"


@dataclass
class RoundLog:
    """Everything one round did, for metrics.jsonl and clients.jsonl."""

    round: int
    global_state: "OrderedDict[str, torch.Tensor] | None" = None
    sampled: list[int] = field(default_factory=list)
    outcomes: list[ClientOutcome] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    eval_sampled: list[int] = field(default_factory=list)
    eval_outcomes: list[ClientOutcome] = field(default_factory=list)
    bytes_down: int = 0
    bytes_up: int = 0
    train_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    #: values the server half computes (FedNova's tau_eff), recorded in metrics.jsonl
    server_metrics: dict[str, float] = field(default_factory=dict)
    #: the aggregate as tensors, when the strategy computed it itself (saves a decode)
    agg_state: "OrderedDict[str, torch.Tensor] | None" = None


@dataclass
class FederationSetup:
    """How the server samples and screens; bound before ``start``."""

    seed: int
    node_of_party: dict[int, int]
    fraction_fit: float = 1.0
    fraction_evaluate: float = 0.0
    min_fit_clients: int = 1
    max_failure_fraction: float = 1.0
    #: state_dict keys of trainable parameters (not buffers); None = every float entry
    param_keys: frozenset[str] | None = None
    #: where the server aggregates (the run's device: flattened tensors on the GPU)
    device: str = "cpu"

    def is_param(self, key: str) -> bool:
        return self.param_keys is None or key in self.param_keys


def weighted_metrics(outcomes: list[ClientOutcome]) -> MetricRecord:
    """Flower's ``aggregate_metricrecords`` on already-decoded replies.

    The example-weighted mean of every scalar metric (the weight key itself left out),
    computed on plain floats and put in one MetricRecord: Flower's version updates a
    MetricRecord once per client and key, with a type check on every write.
    """
    total = float(sum(o.num_examples for o in outcomes))
    sums: dict[str, float] = {}
    for o in outcomes:
        w = o.num_examples / total if total else 0.0
        for key, value in o.metrics.items():
            if key != "num-examples" and isinstance(value, (int, float)):
                sums[key] = sums.get(key, 0.0) + float(value) * w
    return MetricRecord(sums)


def content_bytes(content: RecordDict) -> int:
    """Bytes of the records of a message (what crosses the wire, without metadata)."""
    return int(sum(rec.count_bytes() for rec in content.values()))


def _bytes_of(messages: list[Message]) -> int:
    """Bytes sent to the cohort; a RecordDict shared by several messages is counted once per message."""
    seen: dict[int, int] = {}
    total = 0
    for m in messages:
        key = id(m.content)
        if key not in seen:
            seen[key] = content_bytes(m.content)
        total += seen[key]
    return total


def cohort_size(n: int, fraction: float, minimum: int) -> int:
    # the epsilon keeps 0.3 * 10 from flooring to 2
    return max(min(n, minimum), min(n, int(math.floor(n * fraction + 1e-9))))


class _CohortGrid(Grid):
    """A view of a Grid that shows only the sampled nodes.

    Flower's strategies sample with the process-global ``random`` module; handing
    them this view (with ``fraction = 1``) lets the whole ``configure_*`` chain of a
    Flower strategy run unchanged while the cohort comes from the seed.
    """

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self._grid = grid
        self._node_ids = list(node_ids)

    def set_run(self, run: Any) -> None:  # pragma: no cover - delegation
        self._grid.set_run(run)

    @property
    def run(self) -> Any:  # pragma: no cover - delegation
        return self._grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # pragma: no cover
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._node_ids)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return (NodeInfo(node_id=n) for n in self._node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # pragma: no cover
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # pragma: no cover
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:  # pragma: no cover
        return self._grid.send_and_receive(messages, timeout=timeout)


class FedsimStrategy:
    """Mixin for Flower strategies; see the module docstring.

    Subclasses extend through small hooks rather than by rewriting Flower's methods:
    ``client_config`` (values the client rule reads), ``extra_records`` (arrays sent
    besides the model), ``aggregate_outcomes`` (a custom aggregation of the decoded
    replies), ``state_attributes`` (server state saved in checkpoints).
    """

    #: names of attributes that hold server state (checkpointed and restored)
    state_attributes: tuple[str, ...] = ()
    #: Flower's consistency check wants one ArrayRecord per reply; strategies that
    #: send more (SCAFFOLD) aggregate the decoded outcomes themselves
    single_array_record: bool = True

    setup: FederationSetup
    round_log: RoundLog

    # ----------------------------------------------------------------- binding
    def bind(self, setup: FederationSetup) -> None:
        self.setup = setup
        self.party_of_node = {n: p for p, n in setup.node_of_party.items()}
        self.round_log = RoundLog(round=0)
        # Flower's own sampling sees the already-sampled cohort and takes all of it
        self.fraction_train = 1.0  # type: ignore[attr-defined]
        self.min_train_nodes = 0  # type: ignore[attr-defined]
        self.min_available_nodes = 0  # type: ignore[attr-defined]
        self.fraction_evaluate = 1.0  # type: ignore[attr-defined]
        self.min_evaluate_nodes = 0  # type: ignore[attr-defined]

    def sample(self, server_round: int, purpose: str, fraction: float, minimum: int) -> list[int]:
        """Sorted party ids of this round's cohort, drawn from (seed, purpose, round)."""
        parties = sorted(self.setup.node_of_party)
        k = cohort_size(len(parties), fraction, minimum)
        if k >= len(parties):
            return parties
        rng = np.random.default_rng(derive(self.setup.seed, "sample", purpose, server_round))
        chosen = rng.choice(len(parties), size=k, replace=False)
        return sorted(parties[i] for i in chosen)

    # ------------------------------------------------------------------- hooks
    def client_config(self, server_round: int) -> dict[str, Any]:
        """Scalars added to the train ConfigRecord for the client rule."""
        return {}

    def extra_records(self, server_round: int) -> dict[str, ArrayRecord]:
        """ArrayRecords sent to every client besides the model."""
        return {}

    def aggregate_outcomes(self, server_round: int, outcomes: list[ClientOutcome]) -> "OrderedDict[str, torch.Tensor] | None":
        """A custom aggregation of the decoded replies; None defers to Flower's class."""
        return None

    def average(self, outcomes: list[ClientOutcome]) -> "OrderedDict[str, torch.Tensor]":
        """FedAvg's average of the cohort, weighted by examples, on the server's device."""
        return weighted_average([o.state for o in outcomes], [o.num_examples for o in outcomes], self.setup.device)

    # --------------------------------------------------------------- configure
    def _party(self, msg: Message) -> int:
        return self.party_of_node[msg.metadata.dst_node_id]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.round_log = RoundLog(round=server_round, global_state=record_to_state(arrays))
        parties = self.sample(server_round, "fit", self.setup.fraction_fit, self.setup.min_fit_clients)
        self.round_log.sampled = parties
        cohort = _CohortGrid(grid, [self.setup.node_of_party[p] for p in parties])
        config = ConfigRecord(dict(config))
        for key, value in self.client_config(server_round).items():
            config[key] = value
        messages = list(super().configure_train(server_round, arrays, config, cohort))  # type: ignore[misc]
        extra = self.extra_records(server_round)
        seen: set[int] = set()
        for msg in messages:
            if id(msg.content) not in seen:  # Flower shares one RecordDict across the cohort
                seen.add(id(msg.content))
                for key, rec in extra.items():
                    msg.content[key] = rec
        messages.sort(key=self._party)
        self.round_log.bytes_down = _bytes_of(messages)
        return messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        if self.setup.fraction_evaluate <= 0:
            return []
        parties = self.sample(server_round, "evaluate", self.setup.fraction_evaluate, 1)
        self.round_log.eval_sampled = parties
        cohort = _CohortGrid(grid, [self.setup.node_of_party[p] for p in parties])
        messages = list(super().configure_evaluate(server_round, arrays, ConfigRecord(dict(config)), cohort))  # type: ignore[misc]
        messages.sort(key=self._party)
        self.round_log.bytes_down += _bytes_of(messages)
        return messages

    # ----------------------------------------------------------------- screen
    def _screen(self, replies: Iterable[Message], sampled: list[int], stage: str) -> tuple[list[Message], list[ClientOutcome]]:
        """Split replies into valid ones and failures (error, non-finite, missing)."""
        by_party: dict[int, Message] = {}
        for msg in replies:
            party = self.party_of_node.get(msg.metadata.src_node_id)
            if party is not None:
                by_party[party] = msg
        valid_msgs: list[Message] = []
        outcomes: list[ClientOutcome] = []
        for party in sampled:
            msg = by_party.get(party)
            if msg is None:
                self.round_log.failures.append(Failure(party, "timeout: no reply before the deadline", stage))
                continue
            if msg.has_error():
                reason = (msg.error.reason or f"error code {msg.error.code}").strip().splitlines()
                self.round_log.failures.append(Failure(party, reason[-1] if reason else "client error", stage))
                continue
            content = msg.content
            metrics = {}
            for rec in content.metric_records.values():
                metrics.update(rec)
            nbytes = content_bytes(content)
            self.round_log.bytes_up += nbytes
            bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
            state = None
            records: dict[str, OrderedDict[str, torch.Tensor]] = {}
            if stage == "train":
                arrays = content.array_records
                main_key = "arrays" if "arrays" in arrays else next(iter(arrays), None)
                if main_key is None:
                    self.round_log.failures.append(Failure(party, "reply holds no ArrayRecord", stage))
                    continue
                state = record_to_state(arrays[main_key])
                records = {k: record_to_state(v) for k, v in arrays.items() if k != main_key}
                if not all_finite(state) or not all(all_finite(r) for r in records.values()):
                    bad.append("weights")
            if bad:
                self.round_log.failures.append(Failure(party, f"non-finite {', '.join(bad)}", stage))
                continue
            valid_msgs.append(msg)
            outcomes.append(
                ClientOutcome(
                    party=party,
                    node_id=msg.metadata.src_node_id,
                    num_examples=int(metrics.get("num-examples", 0)),
                    metrics=metrics,
                    state=state,
                    records=records,
                    bytes_up=nbytes,
                )
            )
        return valid_msgs, outcomes

    def _check_failures(self, sampled: list[int], stage: str) -> None:
        failed = sum(1 for f in self.round_log.failures if f.stage == stage)
        if sampled and failed > self.setup.max_failure_fraction * len(sampled):
            raise CohortFailure(
                f"round {self.round_log.round}: {failed} of {len(sampled)} clients failed in {stage}, "
                f"more than federation.max_failure_fraction={self.setup.max_failure_fraction:g}"
            )

    # -------------------------------------------------------------- aggregate
    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, outcomes = self._screen(replies, self.round_log.sampled, "train")
        self.round_log.outcomes = outcomes
        self._check_failures(self.round_log.sampled, "train")
        if not outcomes:
            return None, None
        custom = self.aggregate_outcomes(server_round, outcomes)
        if custom is not None:
            if self.train_metrics_aggr_fn is aggregate_metricrecords:  # type: ignore[attr-defined]
                metrics = weighted_metrics(outcomes)
            else:
                metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)  # type: ignore[attr-defined]
            arrays = state_to_record(custom)
            self.round_log.agg_state = custom
        else:
            arrays, metrics = super().aggregate_train(server_round, valid)  # type: ignore[misc]
            if arrays is not None:
                arrays = state_to_record(restore_dtypes(record_to_state(arrays), self.round_log.global_state or {}))
        if arrays is not None and not all_finite(record_to_state(arrays)):
            raise NonFiniteModel(f"round {server_round}: the aggregated global model holds NaN or inf")
        if metrics is not None:
            self.round_log.train_metrics = dict(metrics)
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        valid, outcomes = self._screen(replies, self.round_log.eval_sampled, "evaluate")
        self.round_log.eval_outcomes = outcomes
        if not valid:
            return None
        metrics = super().aggregate_evaluate(server_round, valid)  # type: ignore[misc]
        if metrics is not None:
            self.round_log.eval_metrics = dict(metrics)
        return metrics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Server state for checkpoints: tensors, lists and dicts of tensors, scalars."""
        return {name: _to_portable(getattr(self, name, None)) for name in self.state_attributes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in self.state_attributes:
            if name in state:
                setattr(self, name, _from_portable(state[name]))

    # ------------------------------------------------------------------ start
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        start_round: int = 1,
    ) -> Result:
        """Flower's ``Strategy.start`` loop, able to begin at ``start_round`` (resume).

        ``evaluate_fn(round, arrays)`` runs after every round (and at round 0 on a
        fresh start): fedsim uses it for central evaluation and the run records.
        """
        log(INFO, "Starting %s strategy at round %s of %s", self.__class__.__name__, start_round, num_rounds)
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result()
        t_start = time.time()
        if evaluate_fn and start_round == 1:
            res = evaluate_fn(0, initial_arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
        arrays = initial_arrays
        result.arrays = arrays
        for current_round in range(start_round, num_rounds + 1):
            train_replies = grid.send_and_receive(
                messages=self.configure_train(current_round, arrays, train_config, grid),  # type: ignore[attr-defined]
                timeout=timeout,
            )
            agg_arrays, agg_train_metrics = self.aggregate_train(current_round, train_replies)
            if agg_arrays is not None:
                result.arrays = agg_arrays
                arrays = agg_arrays
            if agg_train_metrics is not None:
                result.train_metrics_clientapp[current_round] = agg_train_metrics
            evaluate_replies = grid.send_and_receive(
                messages=self.configure_evaluate(current_round, arrays, evaluate_config, grid),
                timeout=timeout,
            )
            agg_evaluate_metrics = self.aggregate_evaluate(current_round, evaluate_replies)
            if agg_evaluate_metrics is not None:
                result.evaluate_metrics_clientapp[current_round] = agg_evaluate_metrics
            if evaluate_fn:
                res = evaluate_fn(current_round, arrays)
                if res is not None:
                    result.evaluate_metrics_serverapp[current_round] = res
        log(INFO, "Strategy execution finished in %.2fs", time.time() - t_start)
        return result


# ---------------------------------------------------------------- portability


def _to_portable(value: Any) -> Any:
    """Server state -> what ``torch.load(weights_only=True)`` can read back."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.array(value, copy=True))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, ArrayRecord):
        return {"__arrayrecord__": {k: torch.from_numpy(np.array(v.numpy(), copy=True)) for k, v in value.items()}}
    if isinstance(value, Mapping):
        return {"__dict__": {str(k): _to_portable(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"__list__": [_to_portable(v) for v in value]}
    raise TypeError(f"cannot checkpoint server state of type {type(value).__name__}")


def _from_portable(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy()
        if "__arrayrecord__" in value:
            return state_to_record(value["__arrayrecord__"])
        if "__dict__" in value:
            return {k: _from_portable(v) for k, v in value["__dict__"].items()}
        if "__list__" in value:
            return [_from_portable(v) for v in value["__list__"]]
    return value
