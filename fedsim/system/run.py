"""The clock in the server's round: :class:`SimulatedClock`, an extension of the strategy.

Composed first with the algorithm (``strategies/extension.py``), it takes part at two
points of each round:

* **cohort**: the parties online at the round's start (availability-aware
  sampling; if nobody is, the round starts when the first party comes online) are those
  the run's selector (``selection.name``, ``strategies/selection``) draws
  ``ceil(K x system.over_selection)`` parties from, K being the cohort the strategy
  would draw (``federation.fraction_fit``); the selector sees the clock's view (each
  party's expected duration, how long it stays online); with everyone always online and
  no over-selection the uniform selector's cohort is the one it draws without a clock;
* **replies**: it times each reply with FedScale's formula (:mod:`fedsim.system.clock`),
  keeps those that arrive (the first K, before the deadline, while their party is
  online), drops the others from the aggregate (they commit no client state) and
  moves the clock to the round's end.

The clock's time is the extension's checkpoint entry, so a resume continues it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch

from fedsim.schema.experiment import epoch_range
from fedsim.system.clock import ReplyTime, RoundTiming, compute_seconds, settle, transfer_seconds
from fedsim.system.profiles import DeviceProfiles
from fedsim.system.sources import load_profiles
from strategies.extension import ServerExtension
from strategies.rounds import ClientOutcome, FederationSetup
from strategies.selection import ClockView

#: the clock's entry in the strategy's checkpoint state
STATE_KEY = "__system_clock_s__"


class SimulatedClock(ServerExtension):
    """The run's simulated clock (module docstring)."""

    def __init__(
        self,
        profiles: DeviceProfiles,
        params: Any,
        batch_size: int,
        fraction_fit: float,
        min_fit_clients: int,
        seed: int,
    ) -> None:
        self.profiles, self.params, self.batch_size = profiles, params, batch_size
        self.fraction_fit, self.min_fit_clients, self.seed = fraction_fit, min_fit_clients, seed
        self.now = 0.0
        #: what :meth:`expected_s` reads: the parties' samples, their local epochs, the model's bytes
        self.party_sizes: Sequence[int] = ()
        self.epochs, self.model_bytes = 1, 0
        self.deadline = params.round_deadline if params.round_deadline is not None else math.inf
        self.timing: RoundTiming | None = None
        self._start: tuple[int, float, int | None] = (0, 0.0, None)  # round, start, K

    # ---------------------------------------------------------------- cohort
    def candidates(self, server_round: int, parties: list[int], m: int) -> tuple[list[int], int, ClockView]:
        """The parties online at the round's start (if nobody is, the round starts when the
        first party comes online), ``ceil(m x over_selection)`` of them to draw, and the
        clock's view of them for the run's selector (``strategies/selection``), which draws
        them: with ``uniform``, the strategy's own draw over the online parties."""
        avail, factor = self.profiles.availability, self.params.over_selection
        start, online = self.now, parties
        if avail is not None:
            online = avail.online_among(start, parties)
            if not online:  # nobody online: the round starts when the first party comes online
                later = avail.next_online(start)
                if math.isfinite(later):
                    start, online = later, avail.online_among(later, parties)
        k = min(m, len(online))
        self._start = (server_round, start, k if factor != 1 else None)
        view = ClockView(start, self.expected_s, partial(self.online_until, start))
        return online, min(len(online), math.ceil(k * factor - 1e-9)), view

    def online_until(self, start: float, party: int) -> float:
        """Until when ``party`` stays online from ``start`` (inf without traces)."""
        avail = self.profiles.availability
        return avail.online_until(party, start) if avail is not None else math.inf

    def expected_s(self, party: int) -> float:
        """The party's expected round duration: FedScale's formula with the model's bytes
        both ways and its local epochs over its samples (``party_sizes``)."""
        p, size = self.profiles, self.party_sizes[party] if party < len(self.party_sizes) else 0
        steps = self.epochs * math.ceil(size / self.batch_size)
        return (
            transfer_seconds(self.model_bytes, float(p.download_kbps[party]))
            + compute_seconds(self.params.augmentation_factor, self.batch_size, steps, float(p.ms_per_sample[party]))
            + transfer_seconds(self.model_bytes, float(p.upload_kbps[party]))
        )

    # --------------------------------------------------------------- replies
    def reply_time(self, o: ClientOutcome) -> ReplyTime:
        """FedScale's duration of one reply (:mod:`fedsim.system.clock`)."""
        p = self.profiles
        steps = int(o.metrics.get("steps", 0))
        return ReplyTime(
            o.party,
            transfer_seconds(o.bytes_down, float(p.download_kbps[o.party])),
            compute_seconds(self.params.augmentation_factor, self.batch_size, steps, float(p.ms_per_sample[o.party])),
            transfer_seconds(o.bytes_up, float(p.upload_kbps[o.party])),
        )

    def apply(
        self,
        server_round: int,
        global_state: Mapping[str, torch.Tensor],
        outcomes: list[ClientOutcome],
        setup: FederationSetup,
    ) -> dict[str, float]:
        started, start, target = self._start
        if started != server_round:  # another extension drew the cohort: it starts now
            start, target = self.now, None
        times = [self.reply_time(o) for o in outcomes]
        avail = self.profiles.availability
        offline_at = {t.party: avail.online_until(t.party, start) for t in times} if avail is not None else {}
        self.timing = settle(server_round, start, times, target, self.deadline, offline_at)
        self.now = self.timing.end_s
        status = {t.party: t for t in times}
        for o in outcomes:
            o.metrics.update(status[o.party].fields())
        # the replies that did not arrive in time leave the aggregate (and keep no state)
        outcomes[:] = [o for o in outcomes if status[o.party].status == "ok"]
        return {}

    def empty_round(self, server_round: int) -> RoundTiming:
        """The timing of a round that aggregated no reply this extension saw."""
        started, start, _ = self._start
        start = start if started == server_round else self.now
        self.now = max(self.now, start)
        self.timing = RoundTiming(server_round, start, self.now)
        return self.timing

    # ------------------------------------------------------------ checkpoint
    def checkpoint_state(self) -> dict[str, Any]:
        return {STATE_KEY: float(self.now)}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        if STATE_KEY in state:
            self.now = float(state[STATE_KEY])


def clock_for(cfg: Any, party_sizes: Sequence[int] = (), model_bytes: int = 0) -> tuple[SimulatedClock, ...]:
    """The run's clock as a tuple of extensions: one with a ``system`` source, none without
    (``party_sizes``, ``model_bytes``: what its expected durations read, for selectors)."""
    profiles = load_profiles(cfg)
    if profiles is None:
        return ()
    f = cfg.federation
    clock = SimulatedClock(profiles, cfg.system, cfg.train.batch_size, f.fraction_fit, f.min_fit_clients, cfg.seed)
    clock.party_sizes, clock.model_bytes = party_sizes, int(model_bytes)
    clock.epochs = epoch_range(cfg.train.epochs)[0]
    return (clock,)
