"""The event-driven server loop of asynchronous FL: :class:`AsyncRun`.

Up to ``concurrency`` parties train at once. A party is dispatched at simulated time t
with the current global model (version v); its reply, trained on version v, arrives at
t + its duration on the clock (:mod:`fedsim.asynchronous.events`), and arrivals are
processed in simulated-time order. Each arrival frees its slot, which goes at once to
a party drawn from (seed, dispatch number) among those online, not in flight and not
arrived since the last server step. Every ``buffer_size`` arrivals the chosen server
(:mod:`fedsim.asynchronous.servers`) takes a step: the model's version grows by one
and the step is a "round" of the records (``federation.rounds`` counts steps), so the
recorder, the evaluation every ``federation.eval_every`` steps, the checkpoints and
the resume work as for synchronous rounds.

Exactness: the messages of the parties dispatched at one moment go out together
(``grid.send_and_receive``: the embedded engine trains them as one cohort, Ray in
parallel); a party's training draws from (seed, version + 1, party), the "round" it
is sent, unique per dispatch because a party is not dispatched twice between two
steps. The checkpoint holds the parties in flight (party, dispatch number and time,
version) and the model versions they were sent; a resume trains them again from those,
so a run stopped anywhere (kill -9) and resumed is byte-equal to one that was not.
A party's new client state is committed when its update is applied.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsim.asynchronous.events import Flight, Schedule, staleness
from fedsim.asynchronous.servers import Arrival, AsyncServer, State
from fedsim.asynchronous.servers import get as get_server
from fedsim.system.clock import ReplyTime, RoundTiming, transfer_seconds
from fedsim.system.run import SimulatedClock
from fedsim.util.seeding import derive
from strategies.arrays import all_finite, state_to_record
from strategies.cohort import cohort_size
from strategies.extension import ServerExtension
from strategies.rounds import ClientOutcome, Failure, RoundHooks, RoundLog
from strategies.selection import uniform_draw
from strategies.strategy import FedsimStrategy, NonFiniteModel

#: the loop's entry in the strategy's checkpoint state
STATE_KEY = "__async__"


class AsyncRun(ServerExtension):
    """The asynchronous loop's state (an extension of the strategy only for its
    checkpoint entry) and the loop itself, :meth:`run` (module docstring)."""

    def __init__(self, server: AsyncServer, params: Any, clock: SimulatedClock, seed: int) -> None:
        self.server, self.params, self.clock, self.seed = server, params, clock, seed
        self.now = self.step_start = 0.0
        self.version = self.dispatched = 0
        self.schedule = Schedule()
        self.versions: dict[int, State] = {}
        self.server_state: dict[str, Any] = {}
        self.restored: list[list[Any]] = []  # flights of a checkpoint, to train again
        self.held: set[int] = set()  # arrived since the last step: not dispatched again before it
        self.arrived: list[Flight] = []
        self.buffer: list[Arrival] = []
        self._sent: tuple[int, RecordDict, int] | None = None  # the last version's content and its bytes

    # ------------------------------------------------------------ checkpoint
    def checkpoint_state(self) -> dict[str, Any]:
        flights = self.schedule.flights()
        used = sorted({f.version for f in flights})
        return {
            STATE_KEY: {
                "now": self.now,
                "step_start": self.step_start,
                "version": self.version,
                "dispatched": self.dispatched,
                "flights": [[f.party, f.dispatch, f.dispatch_s, f.version] for f in flights],
                "versions": {str(v): self.versions[v] for v in used},
                "server": self.server_state,
            }
        }

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        s = state.get(STATE_KEY)
        if s is None:
            return
        self.now, self.step_start = float(s["now"]), float(s["step_start"])
        self.version, self.dispatched = int(s["version"]), int(s["dispatched"])
        self.restored = [list(f) for f in s["flights"]]
        self.versions = {int(v): OrderedDict(st) for v, st in s["versions"].items()}
        self.server_state = dict(s["server"])

    # ------------------------------------------------------------------ loop
    def run(
        self,
        grid: Grid,
        strategy: FedsimStrategy,
        state: State,
        start_round: int,
        num_rounds: int,
        hooks: RoundHooks,
        timeout: float = 3600.0,
    ) -> None:
        """Server steps ``start_round`` .. ``num_rounds`` from the global model ``state``
        (the checkpoint's on resume, with the parties then in flight)."""
        self.grid, self.strategy, self.timeout = grid, strategy, timeout
        setup = strategy.setup
        self.concurrency = self.params.concurrency or cohort_size(
            len(strategy._training), setup.fraction_fit, setup.min_fit_clients
        )
        self.k = self.server.buffer_size(self.params)
        self.versions[self.version] = OrderedDict(state)
        self._relaunch()
        self._fill()
        step = start_round - 1
        while step < num_rounds:
            flight = self._next()
            if flight is not None:
                self._arrive(flight)
                if len(self.buffer) < self.k:
                    self._fill()
                    continue
            elif not (self.buffer or self.held):
                break  # nobody in flight, nothing arrived, nobody will come online
            step += 1  # K arrivals, or (nobody left to dispatch) those that arrived
            if self._step(step, hooks) or step == num_rounds:
                break  # after the last step nobody is sent a model it would never return
            self._fill()

    def _next(self) -> Flight | None:
        """The next arrival; when nobody is in flight, the clock moves to when an
        eligible party comes online (availability). None: nobody can be dispatched
        before a server step."""
        avail = self.clock.profiles.availability
        while not len(self.schedule):
            idle = [p for p in self.strategy._training if p not in self.held]
            later = avail.next_online(self.now, idle) if avail is not None and idle else math.inf
            if not math.isfinite(later) or later <= self.now:
                return None
            self.now = later
            self._fill()
        return self.schedule.pop()

    def _arrive(self, flight: Flight) -> None:
        """An arrival at its simulated time: its slot frees, its update joins the buffer."""
        self.now = flight.arrival_s
        self.held.add(flight.party)
        self.arrived.append(flight)
        o = flight.outcome
        if o is None:
            return
        tau = staleness(self.version, flight.version)
        o.metrics.update(
            {
                "dispatch": flight.dispatch,
                "sim_dispatch_s": flight.dispatch_s,
                "sim_arrival_s": flight.arrival_s,
                "version": flight.version,
                "staleness": tau,
            }
        )
        self.buffer.append(Arrival(o, self.versions[flight.version], flight.version, tau))

    # ------------------------------------------------------------------ step
    def _step(self, step: int, hooks: RoundHooks) -> bool:
        """A server step from the buffer, recorded as round ``step``; True: stop the run."""
        s = self.strategy
        before = self.versions[self.version]
        new = self.server.step(self.params, before, self.buffer, self.server_state) if self.buffer else before
        rl = self._round_log(step, before, new)
        s.round_log = rl
        s._check_failures(rl.sampled, "train")
        if not all_finite(new):
            raise NonFiniteModel(f"round {step}: the aggregated global model holds NaN or inf")
        self.clock.now = self.now
        times = [f.times for f in self.arrived if f.times is not None]
        self.clock.timing = RoundTiming(step, self.step_start, self.now, times)
        self.step_start = self.now
        self.version += 1
        self.versions[self.version] = new
        self.buffer, self.arrived, self.held = [], [], set()
        keep = {f.version for f in self.schedule.flights()} | {self.version}
        self.versions = {v: st for v, st in self.versions.items() if v in keep}
        for ext in s.extensions:
            ext.after_aggregate(step, before, new, s.setup)
        if hooks.after_aggregate:
            hooks.after_aggregate(rl)
        if s.setup.fraction_evaluate > 0:  # the clients' validation of the new model
            messages = s.configure_evaluate(step, state_to_record(new), ConfigRecord(), self.grid)
            s.aggregate_evaluate(step, self.grid.send_and_receive(messages=messages, timeout=self.timeout))
        return bool(hooks.after_round and hooks.after_round(rl))

    def _round_log(self, step: int, before: State, new: State) -> RoundLog:
        """The step's record: the arrivals since the last step, the updates applied, staleness."""
        taus = [a.staleness for a in self.buffer]
        rl = RoundLog(round=step, global_state=before, agg_state=new)
        rl.sampled = [f.party for f in self.arrived]
        rl.outcomes = [a.outcome for a in self.buffer]
        rl.failures = [f.failure for f in self.arrived if f.failure is not None]
        rl.bytes_down = sum(f.bytes_down for f in self.arrived)
        rl.bytes_up = sum(f.bytes_up for f in self.arrived)
        rl.server_metrics = {
            "updates_applied": len(taus),
            "staleness_mean": float(np.mean(taus)) if taus else None,
            "staleness_max": max(taus) if taus else None,
            "model_version": self.version + 1,
        }
        return rl

    # -------------------------------------------------------------- dispatch
    def _fill(self) -> None:
        """Give every free slot to a party drawn from (seed, dispatch number) among those
        online, not in flight and not arrived since the last step."""
        free = self.concurrency - len(self.schedule)
        if free <= 0:
            return
        busy = self.schedule.parties() | self.held
        eligible = [p for p in self.strategy._training if p not in busy]
        avail = self.clock.profiles.availability
        if avail is not None:
            eligible = avail.online_among(self.now, eligible)
        m = min(free, len(eligible))
        if m == 0:
            return
        rng = np.random.default_rng(derive(self.seed, "async", "dispatch", self.dispatched + 1))
        eligible = uniform_draw(eligible, m, rng)
        flights = [Flight(p, self.dispatched + i + 1, self.now, self.version) for i, p in enumerate(eligible)]
        self.dispatched += m
        self._launch(flights)

    def _relaunch(self) -> None:
        """The parties a checkpoint had in flight, trained again from their versions."""
        flights = [Flight(int(p), int(d), float(t), int(v)) for p, d, t, v in self.restored]
        self.restored = []
        for version in sorted({f.version for f in flights}):
            self._launch([f for f in flights if f.version == version])

    def _launch(self, flights: list[Flight]) -> None:
        """Send ``flights`` (one version) their model together, screen the replies and
        put each on the schedule at its simulated arrival time."""
        s, version = self.strategy, flights[0].version
        base = self.versions[version]
        parties = sorted(f.party for f in flights)
        messages, bytes_down = self._messages(version, parties)
        replies = self.grid.send_and_receive(messages, timeout=self.timeout)
        s.round_log = RoundLog(round=version + 1, global_state=base)
        outcomes = {o.party: o for o in s._screen(replies, parties, "train")}
        failures = {f.party: f for f in s.round_log.failures}
        for f in flights:
            self._time(f, outcomes.get(f.party), failures.get(f.party), bytes_down.get(f.party, 0))
            self.schedule.add(f)

    def _messages(self, version: int, parties: list[int]) -> tuple[list[Message], dict[int, int]]:
        """The train messages of ``parties`` for ``version`` and each one's bytes. The
        content (model, config, extra records) is built once per version and shared by
        its later dispatches, as Flower shares one RecordDict across a cohort: the
        embedded engine's clients then decode it once (benchmarks/async_overhead.py:
        dispatching one party at a time cost 1.22x synchronous rounds without this)."""
        s = self.strategy
        if self._sent is not None and self._sent[0] == version:
            _, content, nbytes = self._sent
            nodes = [s.setup.node_of_party[p] for p in parties]
            s._bytes_down = {p: nbytes for p in parties}  # what the screening records as each one's download
            return [Message(content, n, MessageType.TRAIN) for n in nodes], dict(s._bytes_down)
        base = state_to_record(self.versions[version])
        messages = s.train_messages(version + 1, base, ConfigRecord(), self.grid, parties)
        self._sent = (version, messages[0].content, s._bytes_down[parties[0]])
        return messages, dict(s._bytes_down)

    def _time(self, f: Flight, o: ClientOutcome | None, failure: Failure | None, bytes_down: int) -> None:
        """``f``'s arrival on the clock: dispatch + download + compute + upload; a failed
        reply frees its slot once the model is downloaded, a party that goes offline
        before it finishes drops out then (its update is lost)."""
        profiles = self.clock.profiles
        if o is not None:
            times: ReplyTime | None = self.clock.reply_time(o)
            assert times is not None
            f.arrival_s = f.dispatch_s + times.total_s
        else:
            times = None
            f.arrival_s = f.dispatch_s + transfer_seconds(bytes_down, float(profiles.download_kbps[f.party]))
        avail = profiles.availability
        until = avail.online_until(f.party, f.dispatch_s) if avail is not None else math.inf
        if times is not None and f.arrival_s > until:
            times.status, f.arrival_s, o = "offline", until, None
        if o is not None and times is not None:
            o.metrics.update(times.fields())
        f.outcome, f.failure, f.times = o, failure, times
        f.bytes_down, f.bytes_up = bytes_down, (o.bytes_up if o is not None else 0)


def async_for(cfg: Any, clocks: tuple[SimulatedClock, ...]) -> tuple[AsyncRun, ...]:
    """The run's asynchronous loop as a tuple of extensions: one with ``asynchronous.mode``
    other than off (the config's check made sure the clock is there), none otherwise."""
    server = get_server(cfg.asynchronous.mode)
    if not server.asynchronous or not clocks:
        return ()
    return (AsyncRun(server, cfg.asynchronous, clocks[0], cfg.seed),)


def async_run_of(strategy: FedsimStrategy) -> AsyncRun | None:
    """The strategy's asynchronous loop, or None (synchronous rounds)."""
    return next((e for e in strategy.extensions if isinstance(e, AsyncRun)), None)
