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
    """When each party is online: sorted, disjoint ``[start, end)`` intervals in
    ``[0, period)``, repeating every ``period`` seconds (``inf``: no repetition).

    Flat arrays, sorted by party then start (``owner[i]``: the party of interval i), so
    that whether every party is online is one vectorised pass (10,000 parties each
    round: ``benchmarks/system_clock.py``)."""

    owner: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    period: np.ndarray

    def __post_init__(self) -> None:
        self._ptr = np.searchsorted(self.owner, np.arange(len(self.period) + 1))

    def of(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """Party ``p``'s interval starts and ends."""
        a, b = self._ptr[p], self._ptr[p + 1]
        return self.starts[a:b], self.ends[a:b]

    def online(self, t: float) -> np.ndarray:
        """A boolean per party: online at simulated time ``t``."""
        finite = np.isfinite(self.period)
        local = np.where(finite, np.mod(t, np.where(finite, self.period, 1.0)), t)[self.owner]
        inside = (self.starts <= local) & (local < self.ends)
        return np.bincount(self.owner[inside], minlength=len(self.period)) > 0

    def online_among(self, t: float, parties: Sequence[int]) -> list[int]:
        """The parties of ``parties`` online at simulated time ``t``, in their order."""
        if not len(parties):
            return []
        ids = np.asarray(parties, dtype=np.int64)
        return ids[self.online(t)[ids]].tolist()

    def next_online(self, t: float, parties: Sequence[int] | None = None) -> float:
        """The earliest time >= ``t`` at which some party (of ``parties``; None: any) is
        online (inf: never)."""
        best = math.inf
        for p in range(len(self.period)) if parties is None else parties:
            best = min(best, self._next_start(p, t))
            if best == t:
                break
        return best

    def _next_start(self, p: int, t: float) -> float:
        s, e = self.of(p)
        period = float(self.period[p])
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
        s, e = self.of(p)
        period = float(self.period[p])
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


ALLOWED = "allowed: sorted, disjoint [start, end) intervals with 0 <= start < end <= period"


def check_availability(
    owner: np.ndarray, starts: np.ndarray, ends: np.ndarray, period: np.ndarray, what: str
) -> Availability:
    """Flat intervals (sorted by party, each party's in its order) checked at once:
    ProfileError naming the first party whose intervals are unsorted, overlap, are
    empty or leave ``[0, period)``."""
    bad_period = np.flatnonzero(~(period > 0))
    if bad_period.size:
        i = int(bad_period[0])
        raise ProfileError(f"{what}: the availability period of party {i} is {float(period[i])!r}; allowed: > 0")
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(starts) & (starts >= 0) & (starts < ends) & (ends <= period[owner]))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ProfileError(
            f"{what}: availability interval [{starts[k]:g}, {ends[k]:g}) of party {int(owner[k])} is invalid; {ALLOWED}"
        )
    same = owner[1:] == owner[:-1]
    clash = np.flatnonzero(same & (starts[1:] < ends[:-1]))
    if clash.size:
        k = int(clash[0]) + 1
        raise ProfileError(
            f"{what}: availability intervals [{starts[k - 1]:g}, {ends[k - 1]:g}) and [{starts[k]:g}, {ends[k]:g}) "
            f"of party {int(owner[k])} overlap; {ALLOWED}"
        )
    return Availability(owner, starts, ends, period)


def flatten(
    intervals: Sequence[Sequence[Sequence[float]] | None], period: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-party interval lists (None: always online) as flat (owner, starts, ends)."""
    owner, starts, ends = [], [], []
    for p, own in enumerate(intervals):
        if own is None:  # always online: one interval over the whole period
            own = [(0.0, float(period[p]))]
        for a, b in own:
            owner.append(p)
            starts.append(float(a))
            ends.append(float(b))
    return np.asarray(owner, dtype=np.int64), np.asarray(starts), np.asarray(ends)


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
    owner, starts, ends = flatten(intervals, period)
    return DeviceProfiles(ms, up, down, check_availability(owner, starts, ends, period, what))
