"""The parties in flight on the simulated clock, and the staleness of each arrival.

A dispatch sends party p the global model of version v at simulated time t; its reply
(trained on version v) gives its duration from the clock (download + compute from its
``steps`` + upload from its bytes, :mod:`fedsim.system.clock`), so it arrives at
t + duration. Arrivals are processed strictly in the order (arrival time, party,
dispatch number), whatever order the replies came back in wall time: the same seed
gives the same order on every engine. An arrival's staleness is the server's version
when it arrives minus the version it started from (FedBuff's tau, FedAsync's t - tau).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from fedsim.system.clock import ReplyTime
from strategies.rounds import ClientOutcome, Failure


@dataclass
class Flight:
    """One dispatch: ``party`` sent version ``version`` at ``dispatch_s`` (dispatch
    number ``dispatch``, unique in the run); once its reply is back, its arrival time,
    what it replied (``outcome``, or ``failure``) and its times on the clock."""

    party: int
    dispatch: int
    dispatch_s: float
    version: int
    arrival_s: float = 0.0
    outcome: ClientOutcome | None = None
    failure: Failure | None = None
    times: ReplyTime | None = None
    bytes_down: int = 0
    bytes_up: int = 0

    @property
    def key(self) -> tuple[float, int, int]:
        """Where the arrival sorts: (arrival time, party, dispatch number)."""
        return (self.arrival_s, self.party, self.dispatch)


def staleness(version_at_arrival: int, version_started: int) -> int:
    """tau = the server's version when the update arrives - the version it was trained on."""
    return version_at_arrival - version_started


class Schedule:
    """The parties in flight, popped in arrival order (module docstring)."""

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[float, int, int], Flight]] = []

    def add(self, flight: Flight) -> None:
        heapq.heappush(self._heap, (flight.key, flight))

    def pop(self) -> Flight:
        return heapq.heappop(self._heap)[1]

    def __len__(self) -> int:
        return len(self._heap)

    def flights(self) -> list[Flight]:
        """The flights in arrival order (for the checkpoint)."""
        return [f for _, f in sorted(self._heap, key=lambda item: item[0])]

    def parties(self) -> set[int]:
        return {f.party for _, f in self._heap}
