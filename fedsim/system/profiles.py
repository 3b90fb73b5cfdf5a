"""The parties' device profiles: compute speed, bandwidths and availability.

One :class:`DeviceProfiles` per run, made by the chosen ``system.source`` plug-in
(``fedsim/system/sources/``) and checked here once: every party has a profile, every
speed and bandwidth is positive and finite, and each party's availability is a sorted
list of disjoint ``[start, end)`` intervals inside its period (FedScale's
``client_behave_trace``: ``active``/``inactive`` times repeating every
``finish_time`` seconds, Lai et al. 2022). What is wrong raises
:class:`ProfileError`, one line naming the file, the party and what is allowed.

Units follow FedScale's ``client_device_capacity``: compute in milliseconds per
sample of a training step, bandwidths in kbit/s (1 kbit = 1024 bits, as FedScale
converts a model's bytes: ``bytes / 1024 * 8``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedsim.errors import ConfigError


class ProfileError(ConfigError):
    """A device profile or an availability trace that cannot be used (one line)."""


@dataclass
class Availability:
    """When each party is online: per party sorted, disjoint ``[start, end)`` intervals in
    ``[0, period)``, repeating every ``period`` seconds (``inf``: no repetition)."""

    starts: list[np.ndarray]
    ends: list[np.ndarray]
    period: np.ndarray

    def __post_init__(self) -> None:
        # flat arrays: whether every party is online at a time is one vectorised pass
        # (10,000 parties each round: benchmarks/system_clock.py)
        self._owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(self.starts)]).astype(np.int64)
        self._s = np.concatenate(self.starts) if self.starts else np.zeros(0)
        self._e = np.concatenate(self.ends) if self.ends else np.zeros(0)

    def _local(self, t: float) -> np.ndarray:
        return np.where(np.isfinite(self.period), np.mod(t, np.where(np.isfinite(self.period), self.period, 1.0)), t)

    def online(self, t: float) -> np.ndarray:
        """A boolean per party: online at simulated time ``t``."""
        local = self._local(t)[self._owner]
        inside = (self._s <= local) & (local < self._e)
        return np.bincount(self._owner[inside], minlength=len(self.starts)) > 0

    def next_online(self, t: float) -> float:
        """The earliest time >= ``t`` at which some party is online (inf: never)."""
        best = math.inf
        for p in range(len(self.starts)):
            best = min(best, self._next_start(p, t))
            if best == t:
                break
        return best

    def _next_start(self, p: int, t: float) -> float:
        s, e, period = self.starts[p], self.ends[p], float(self.period[p])
        if len(s) == 0:
            return math.inf
        base = math.floor(t / period) * period if math.isfinite(period) else 0.0
        local = t - base
        for a, b in zip(s, e, strict=True):
            if a <= local < b:
                return t
            if a > local:
                return base + float(a)
        return base + period + float(s[0]) if math.isfinite(period) else math.inf

    def online_until(self, p: int, t: float) -> float:
        """When party ``p``, online at ``t``, goes offline (inf: never); intervals that
        touch (``end == next start``, or the period's end and its start) are one stretch."""
        s, e, period = self.starts[p], self.ends[p], float(self.period[p])
        base = math.floor(t / period) * period if math.isfinite(period) else 0.0
        local = t - base
        i = next((k for k in range(len(s)) if s[k] <= local < e[k]), None)
        if i is None:
            return t
        wraps = 0
        while True:
            end = float(e[i])
            nxt = i + 1
            if nxt < len(s) and float(s[nxt]) == end:
                i = nxt
                continue
            if nxt == len(s) and math.isfinite(period) and end == period and float(s[0]) == 0.0:
                wraps += 1
                if wraps > 1:  # online all the period round
                    return math.inf
                base, i = base + period, 0
                continue
            return base + end


@dataclass
class DeviceProfiles:
    """One profile per party (index = party id) and, optionally, their availability
    (None: always online)."""

    ms_per_sample: np.ndarray
    upload_kbps: np.ndarray
    download_kbps: np.ndarray
    availability: Availability | None = None

    @property
    def n(self) -> int:
        return len(self.ms_per_sample)


def _positive(values: Sequence[float] | np.ndarray, column: str, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
    if bad.size:
        i = int(bad[0])
        raise ProfileError(f"{what}: {column} of party {i} is {float(arr[i])!r}; allowed: a finite number > 0")
    return arr


def check_intervals(
    intervals: Sequence[Sequence[float]], period: float, party: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """One party's ``[start, end)`` intervals as two arrays; ProfileError when they are
    not sorted, overlap, are empty or leave ``[0, period)``."""
    starts = np.array([float(a) for a, _ in intervals], dtype=np.float64)
    ends = np.array([float(b) for _, b in intervals], dtype=np.float64)
    allowed = "allowed: sorted, disjoint [start, end) intervals with 0 <= start < end <= period"
    for k in range(len(starts)):
        a, b = starts[k], ends[k]
        if not (math.isfinite(a) and 0 <= a < b and b <= period):
            raise ProfileError(f"{what}: availability interval [{a:g}, {b:g}) of party {party} is invalid; {allowed}")
        if k and a < ends[k - 1]:
            raise ProfileError(
                f"{what}: availability intervals [{starts[k - 1]:g}, {ends[k - 1]:g}) and [{a:g}, {b:g}) "
                f"of party {party} overlap; {allowed}"
            )
    return starts, ends


def make_profiles(
    n_parties: int,
    ms_per_sample: Sequence[float] | np.ndarray,
    upload_kbps: Sequence[float] | np.ndarray,
    download_kbps: Sequence[float] | np.ndarray,
    what: str,
    intervals: Sequence[Sequence[Sequence[float]] | None] | None = None,
    periods: Sequence[float] | np.ndarray | None = None,
) -> DeviceProfiles:
    """Checked profiles of ``n_parties`` (``what`` names the source in errors);
    ``intervals[i]`` None: party i always online."""
    if len(ms_per_sample) != n_parties:
        raise ProfileError(
            f"{what} gives {len(ms_per_sample)} device profiles; the federation has {n_parties} parties: "
            f"give one per party"
        )
    ms = _positive(ms_per_sample, "ms_per_sample", what)
    up = _positive(upload_kbps, "upload_kbps", what)
    down = _positive(download_kbps, "download_kbps", what)
    if intervals is None:
        return DeviceProfiles(ms, up, down)
    period = np.full(n_parties, math.inf) if periods is None else np.asarray(periods, dtype=np.float64)
    bad = np.flatnonzero(~(period > 0))
    if bad.size:
        raise ProfileError(
            f"{what}: the availability period of party {int(bad[0])} is {float(period[bad[0]])!r}; allowed: > 0"
        )
    starts, ends = [], []
    for p in range(n_parties):
        own = intervals[p]
        if own is None:  # always online: one interval over the whole period
            own = [(0.0, float(period[p]))] if math.isfinite(period[p]) else [(0.0, math.inf)]
            if not math.isfinite(period[p]):
                starts.append(np.array([0.0]))
                ends.append(np.array([math.inf]))
                continue
        s, e = check_intervals(own, float(period[p]), p, what)
        starts.append(s)
        ends.append(e)
    return DeviceProfiles(ms, up, down, Availability(starts, ends, period))
