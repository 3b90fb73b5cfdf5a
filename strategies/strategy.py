"""The server half every algorithm shares: :class:`FedsimStrategy`.

A mixin placed before a Flower strategy class in the bases
(``class FedAvgServer(FedsimStrategy, flwr.serverapp.strategy.FedAvg)``). It keeps
Flower's ``configure_*``/``aggregate_*`` chain and adds what a simulator needs:
the cohort drawn from the seed and the round, screening of failed or non-finite
replies, a record of every round (:class:`RoundLog`) handed to the caller's
:class:`RoundHooks`, a resumable ``start(start_round=...)`` and a ``state_dict`` of
the server state.

An algorithm changes the server through three small hooks: :meth:`client_config`
(values sent to the clients), :meth:`extra_records` (arrays sent besides the model)
and :meth:`aggregate` (the new global state from the decoded replies; FedAvg's
float64 weighted average by default). Replies may carry only some of the model's
entries (personalised algorithms keep their personal layers at home): an entry no
reply carries keeps its global value.

What the rest of a run's config adds to the round (an attack at the server, a
defence, differential privacy) is not known here: it is composed with the strategy
when it is built, as :class:`~strategies.extension.ServerExtension` objects that take
part in the round at the points ``strategies/extension.py`` lists, in their order.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy import Result

from fedsim.util.seeding import derive

from .arrays import all_finite, record_nbytes, record_to_state, restore_dtypes, state_to_record, weighted_average
from .cohort import CohortGrid, cohort_size, invert
from .extension import Aggregator, ServerExtension, wrap_aggregate
from .params import StrategyParams
from .rounds import Aggregate, ClientOutcome, Failure, FederationSetup, RoundHooks, RoundLog
from .selection import Pool, SelectionHistory, SelectionParams, uniform_draw
from .selection import get as get_selector

#: the selector's history in the strategy's checkpoint state
SELECTION_KEY = "__selection__"
#: the train config key that asks each party for the global model's loss on its data first
GLOBAL_LOSS_KEY = "global-loss"

log = logging.getLogger(__name__)

StateDict = "OrderedDict[str, torch.Tensor]"

#: Flower's own sampling is switched off: it sees the already-sampled cohort and takes all of it
FLOWER_SAMPLING = {
    "fraction_train": 1.0,
    "fraction_evaluate": 1.0,
    "min_train_nodes": 0,
    "min_evaluate_nodes": 0,
    "min_available_nodes": 0,
}


class CohortFailure(RuntimeError):
    """More clients of a cohort failed than ``max_failure_fraction`` allows."""


class NonFiniteModel(RuntimeError):
    """The aggregated global model holds NaN or inf."""


def weighted_metrics(outcomes: list[ClientOutcome]) -> MetricRecord:
    """Flower's ``aggregate_metricrecords`` on already-decoded replies: the
    example-weighted mean of every scalar metric (the weight key itself left out)."""
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
    return int(
        sum(record_nbytes(rec) if isinstance(rec, ArrayRecord) else rec.count_bytes() for rec in content.values())
    )


def _bytes_each(messages: list[Message]) -> list[int]:
    """Bytes sent in each message; a RecordDict shared by several messages is measured once."""
    seen: dict[int, int] = {}
    for m in messages:
        key = id(m.content)
        if key not in seen:
            seen[key] = content_bytes(m.content)
    return [seen[id(m.content)] for m in messages]


class FedsimStrategy:
    """Mixin for Flower strategies; see the module docstring."""

    #: names of attributes that hold server state (checkpointed and restored)
    state_attributes: tuple[str, ...] = ()
    #: the algorithm reads F_k(w^t), each party's loss of the received model before training
    #: (q-FFL): the train config asks the parties for it (reply metrics ``global_loss``)
    asks_global_loss: bool = False
    #: what the run adds to the round, in the order they act (``strategies/extension.py``);
    #: given when the strategy is built (:func:`strategies.build`, :meth:`compose`)
    extensions: tuple[ServerExtension, ...] = ()

    setup: FederationSetup
    round_log: RoundLog

    def __init__(self, params: StrategyParams | None = None, **flower_kwargs: Any) -> None:
        super().__init__(**{**FLOWER_SAMPLING, **flower_kwargs})  # type: ignore[call-arg]
        self.params = params if params is not None else StrategyParams()
        self._aggregator: Aggregator = self
        self._bytes_down: dict[int, int] = {}

    def compose(self, extensions: Iterable[ServerExtension]) -> FedsimStrategy:
        """This strategy with ``extensions`` in its round, in their order (part of building
        it: :func:`strategies.build`; an algorithm's ``Server`` class takes its
        hyperparameters only). Returns the strategy."""
        self.extensions = tuple(extensions)
        # the extensions that wrap the aggregate around the algorithm's, built once
        self._aggregator = wrap_aggregate(self.extensions, self)
        return self

    # ----------------------------------------------------------------- binding
    def bind(self, setup: FederationSetup) -> None:
        self.setup = setup
        self.party_of_node = invert(setup.node_of_party)
        self.round_log = RoundLog(round=0)
        # the parties that train, sorted once: sorting a million of them took ~0.5 s a
        # round (benchmarks/scale.py)
        self._training = sorted(p for p in setup.node_of_party if p not in setup.holdout)
        self.selection = setup.selection if setup.selection is not None else SelectionParams()
        self.selector = get_selector(self.selection.name)
        self.history = SelectionHistory() if self.selector.keeps_history else None

    def sample(
        self, server_round: int, purpose: str, fraction: float, minimum: int, exclude: frozenset[int] = frozenset()
    ) -> list[int]:
        """Sorted party ids of this round's cohort, drawn from (seed, purpose, round)
        among the parties that are not held out (nor in ``exclude``)."""
        parties = [p for p in self._training if p not in exclude] if exclude else self._training
        k = cohort_size(len(parties), fraction, minimum)
        return uniform_draw(parties, k, np.random.default_rng(derive(self.setup.seed, "sample", purpose, server_round)))

    # ------------------------------------------------------------------- hooks
    def client_config(self, server_round: int) -> dict[str, Any]:
        """Scalars added to the train ConfigRecord (values a client cannot read from
        the config it already has, e.g. ones that change with the round)."""
        return {}

    def extra_records(self, server_round: int) -> dict[str, ArrayRecord]:
        """ArrayRecords sent to every client besides the model."""
        return {}

    def aggregate(
        self, server_round: int, global_state: OrderedDict[str, torch.Tensor], outcomes: list[ClientOutcome]
    ) -> Aggregate:
        """The new global state from the cohort's decoded replies (FedAvg by default)."""
        return Aggregate(self.average(outcomes))

    def average(self, outcomes: list[ClientOutcome]) -> OrderedDict[str, torch.Tensor]:
        """FedAvg's average of the cohort, weighted by examples, on the server's device."""
        return weighted_average([o.state for o in outcomes], [o.num_examples for o in outcomes], self.setup.device)

    # --------------------------------------------------------------- configure
    def _party(self, msg: Message) -> int:
        return self.party_of_node[msg.metadata.dst_node_id]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.round_log = RoundLog(round=server_round, global_state=record_to_state(arrays))
        parties = self._train_cohort(server_round, arrays, grid)
        self.round_log.sampled = parties
        messages = self.train_messages(server_round, arrays, config, grid, parties)
        self.round_log.bytes_down += sum(self._bytes_down.values())  # after a selector's probe, if any
        return messages

    def train_messages(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid, parties: list[int]
    ) -> list[Message]:
        """The train messages of ``parties`` (sorted by party) for ``server_round``: the
        model, the config with the algorithm's and the extensions' values, the
        algorithm's extra records; each party's bytes in ``self._bytes_down``. The
        synchronous round sends its cohort; the asynchronous loop the parties it dispatches."""
        cohort = CohortGrid(grid, [self.setup.node_of_party[p] for p in parties])
        config = ConfigRecord(dict(config))
        if self.asks_global_loss or self.selector.asks_global_loss:
            config[GLOBAL_LOSS_KEY] = 1
        # the algorithm's values, then the extensions' (a DP noise multiplier, a clipping norm)
        for part in (self.client_config(server_round), *(e.client_config(server_round) for e in self.extensions)):
            for key, value in part.items():
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
        each = self._download(server_round - 1, messages, arrays)
        self._bytes_down = {self._party(m): n for m, n in zip(messages, each, strict=True)}
        return messages

    def _train_cohort(
        self, server_round: int, arrays: ArrayRecord | None = None, grid: Grid | None = None
    ) -> list[int]:
        """The parties that train this round: drawn by the first extension that draws
        (client-level DP's Poisson cohort), else by the run's selector
        (``strategies/selection``) among the parties the first extension that narrows
        them leaves (the clock's online parties), with the generator of (seed, "sample",
        "fit", round): ``uniform`` is :meth:`sample`'s draw."""
        for ext in self.extensions:
            parties = ext.sample(server_round, list(self._training))
            if parties is not None:
                return parties
        # read, never changed: no copy (a million parties' list took ~5 ms a round to copy)
        parties = self._training
        m, view = cohort_size(len(parties), self.setup.fraction_fit, self.setup.min_fit_clients), None
        for ext in self.extensions:
            narrowed = ext.candidates(server_round, parties, m)
            if narrowed is not None:
                parties, m, view = narrowed
                break
        probe = None
        if self.selector.probes and arrays is not None and grid is not None:
            probe = lambda found: self._probe(server_round, arrays, grid, found)  # noqa: E731
        pool = Pool(
            round=server_round,
            parties=parties,
            m=m,
            rng=np.random.default_rng(derive(self.setup.seed, "sample", "fit", server_round)),
            sizes=self.setup.party_sizes,
            history=self.history if self.history is not None else SelectionHistory(),
            clock=view,
            probe=probe,
        )
        return self.selector.select(self.selection, pool)

    def _probe(self, server_round: int, arrays: ArrayRecord, grid: Grid, parties: list[int]) -> dict[int, float]:
        """F_k(w^t) of ``parties``: the loss of the global model on each one's training data,
        asked in a query message carrying the model (Power-of-Choice's candidates); the
        bytes both ways are the round's. A party that fails has no entry."""
        content = RecordDict(
            {"arrays": arrays, "config": ConfigRecord({"ask": "global-loss", "server-round": server_round})}
        )
        msgs = [
            Message(content, dst_node_id=self.setup.node_of_party[p], message_type=MessageType.QUERY) for p in parties
        ]
        self.round_log.bytes_down += content_bytes(content) * len(msgs)
        out: dict[int, float] = {}
        for reply in grid.send_and_receive(msgs):
            if reply.has_error() or not reply.has_content():
                continue
            self.round_log.bytes_up += content_bytes(reply.content)
            metrics = reply.content["metrics"]
            party = self.party_of_node.get(reply.metadata.src_node_id)
            loss = float(metrics.get("global_loss", math.nan))
            if party is not None and math.isfinite(loss):
                out[party] = loss
        return out

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self.setup.fraction_evaluate <= 0:
            return []
        parties = self.sample(server_round, "evaluate", self.setup.fraction_evaluate, 1, self.setup.no_validation)
        if not parties:
            return []
        self.round_log.eval_sampled = parties
        cohort = CohortGrid(grid, [self.setup.node_of_party[p] for p in parties])
        messages = list(super().configure_evaluate(server_round, arrays, ConfigRecord(dict(config)), cohort))  # type: ignore[misc]
        messages.sort(key=self._party)
        self.round_log.bytes_down += sum(self._download(server_round, messages, arrays))
        return messages

    def _download(self, version: int, messages: list[Message], arrays: ArrayRecord) -> list[int]:
        """The bytes each message costs its party: its records, or what the extensions
        say it costs (a compressed broadcast, :meth:`ServerExtension.download`)."""
        each = _bytes_each(messages)
        if messages and self.extensions:
            parties, model_bytes = [self._party(m) for m in messages], arrays.count_bytes()
            for ext in self.extensions:
                each = ext.download(version, parties, each, model_bytes)
        return each

    # ----------------------------------------------------------------- screen
    def _screen(self, replies: Iterable[Message], sampled: list[int], stage: str) -> list[ClientOutcome]:
        """The valid replies, decoded; failures (error, non-finite, missing) go to the round log."""
        by_party: dict[int, Message] = {}
        for msg in replies:
            party = self.party_of_node.get(msg.metadata.src_node_id)
            if party is not None:
                by_party[party] = msg
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
            metrics: dict[str, Any] = {}
            for rec in content.metric_records.values():
                metrics.update(rec)
            nbytes = content_bytes(content)  # what was sent: before any extension decodes it
            self.round_log.bytes_up += nbytes
            if stage == "train":
                for ext in self.extensions:
                    ext.decode_reply(self.round_log.round, self.round_log.global_state or {}, content)
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
                injected = " (injected)" if metrics.get("injected-fault") else ""
                self.round_log.failures.append(Failure(party, f"non-finite {', '.join(bad)}{injected}", stage))
                continue
            outcomes.append(
                ClientOutcome(
                    party=party,
                    node_id=msg.metadata.src_node_id,
                    num_examples=int(metrics.get("num-examples", 0)),
                    metrics=metrics,
                    state=state,
                    records=records,
                    bytes_up=nbytes,
                    bytes_down=self._bytes_down.get(party, 0) if stage == "train" else 0,
                    message=msg,
                )
            )
        return outcomes

    def _check_failures(self, sampled: list[int], stage: str) -> None:
        if self.setup.check_failures is not None:  # before any tolerance: the run's own failure ends it
            self.setup.check_failures(self.round_log.round, self.round_log.failures)
        failed = sum(1 for f in self.round_log.failures if f.stage == stage)
        if sampled and failed > self.setup.max_failure_fraction * len(sampled):
            raise CohortFailure(
                f"round {self.round_log.round}: {failed} of {len(sampled)} clients failed in {stage}, "
                f"more than federation.max_failure_fraction={self.setup.max_failure_fraction:g}"
            )

    # -------------------------------------------------------------- aggregate
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rl = self.round_log
        outcomes = self._screen(replies, rl.sampled, "train")
        rl.outcomes = outcomes
        self._check_failures(rl.sampled, "train")
        if not outcomes and not any(e.releases_empty_cohort for e in self.extensions):
            rl.agg_state = rl.global_state
            return None, None
        global_state = rl.global_state or OrderedDict()
        screened = list(outcomes)  # the selector's history: every valid reply, late ones too
        # the extensions act on the replies first (an attack simulated at the server, a
        # defence); the algorithm, wrapped by those that wrap it (client-level DP),
        # aggregates what they leave
        for ext in self.extensions:
            rl.server_metrics.update(ext.apply(server_round, global_state, outcomes, self.setup))
        if self.history is not None:  # after the clock, which times each reply (sim_total_s)
            for o in screened:
                self.history.record(server_round, o.party, o.metrics)
        if not outcomes and not any(e.releases_empty_cohort for e in self.extensions):
            rl.agg_state = rl.global_state  # an extension dropped every reply (all late)
            return None, None
        agg = self._aggregator.aggregate(server_round, global_state, outcomes)
        # entries no reply carries (a personalised algorithm's personal layers) keep
        # their global value: the aggregate is always a whole state_dict
        merged = OrderedDict((k, agg.state.get(k, v)) for k, v in global_state.items())
        state = restore_dtypes(merged if global_state else agg.state, global_state)
        if not all_finite(state):
            raise NonFiniteModel(f"round {server_round}: the aggregated global model holds NaN or inf")
        rl.agg_state = state
        rl.server_metrics.update(agg.metrics)
        for ext in self.extensions:
            ext.after_aggregate(server_round, global_state, state, self.setup)
        return state_to_record(state), weighted_metrics(outcomes) if outcomes else None

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        outcomes = self._screen(replies, self.round_log.eval_sampled, "evaluate")
        self.round_log.eval_outcomes = outcomes
        if not outcomes:
            return None
        metrics = weighted_metrics(outcomes)
        self.round_log.eval_metrics = dict(metrics)
        return metrics

    # ------------------------------------------------------------------ state
    def get_state(self, name: str) -> Any:
        """The server state ``name`` of :attr:`state_attributes` (an attribute of the
        strategy; a class whose state Flower holds reads it through fedsim.util.flower_compat)."""
        return getattr(self, name, None)

    def set_state(self, name: str, value: Any) -> None:
        """Restore the server state ``name`` of :attr:`state_attributes`."""
        setattr(self, name, value)

    def state_dict(self) -> dict[str, Any]:
        """Server state for checkpoints: tensors, lists and dicts of tensors, scalars;
        the algorithm's, then each extension's entries (a reply rule's under
        ``<rule key>.<attribute>``, privacy's under ``__privacy__``)."""
        out = {name: _to_portable(self.get_state(name)) for name in self.state_attributes}
        for ext in self.extensions:
            out.update((key, _to_portable(value)) for key, value in ext.checkpoint_state().items())
        if getattr(self, "history", None) is not None:
            out[SELECTION_KEY] = _to_portable(self.history.to_state())
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (an entry a checkpoint lacks stays as it is)."""
        decoded = {key: _from_portable(value) for key, value in state.items()}
        for name in self.state_attributes:
            if name in decoded:
                self.set_state(name, decoded[name])
        for ext in self.extensions:
            ext.load_checkpoint_state(decoded)
        if getattr(self, "history", None) is not None and SELECTION_KEY in decoded:
            self.history = SelectionHistory.from_state(decoded[SELECTION_KEY])

    # ------------------------------------------------------------------ start
    def start(  # type: ignore[override]
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        start_round: int = 1,
        hooks: RoundHooks | None = None,
    ) -> Result:
        """Flower's ``Strategy.start`` loop, able to begin at ``start_round`` (resume).

        Instead of Flower's ``evaluate_fn``, ``hooks.after_round(round_log)`` runs after
        every round: fedsim evaluates the global model there and writes its records.
        """
        log.info("starting %s at round %s of %s", self.__class__.__name__, start_round, num_rounds)
        hooks = hooks or RoundHooks()
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result()
        t_start = time.time()
        arrays = initial_arrays
        result.arrays = arrays
        for current_round in range(start_round, num_rounds + 1):
            train_replies = grid.send_and_receive(
                messages=self.configure_train(current_round, arrays, train_config, grid),
                timeout=timeout,
            )
            agg_arrays, agg_train_metrics = self.aggregate_train(current_round, train_replies)
            if agg_arrays is not None:
                result.arrays = arrays = agg_arrays
            if agg_train_metrics is not None:
                result.train_metrics_clientapp[current_round] = agg_train_metrics
            if hooks.after_aggregate:
                hooks.after_aggregate(self.round_log)
            evaluate_replies = grid.send_and_receive(
                messages=self.configure_evaluate(current_round, arrays, evaluate_config, grid),
                timeout=timeout,
            )
            agg_evaluate_metrics = self.aggregate_evaluate(current_round, evaluate_replies)
            if agg_evaluate_metrics is not None:
                result.evaluate_metrics_clientapp[current_round] = agg_evaluate_metrics
            if hooks.after_round and hooks.after_round(self.round_log):
                break
        log.info("strategy finished in %.2fs", time.time() - t_start)
        return result


class FedAvgServer(FedsimStrategy, FlowerFedAvg):
    """The default server half: Flower's FedAvg with fedsim's sampling and
    :meth:`FedsimStrategy.aggregate`'s float64 weighted average."""


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


def from_portable(value: Any) -> Any:
    """What :func:`_to_portable` wrote, back as the server state (a checkpoint's)."""
    return _from_portable(value)


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
