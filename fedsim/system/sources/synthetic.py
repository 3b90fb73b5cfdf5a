"""``system.source: synthetic``: seeded, heavy-tailed device speeds and bandwidths.

Compute speed and bandwidth are log-normal around their medians (``x = median x
exp(spread x z)``, z standard normal), the heavy right tail of device figures that
FedScale's ``client_device_capacity`` (AI Benchmark and MobiPerf measurements, Lai et
al. 2022) shows; a party's upload and download share one draw (a good link is good
both ways). Optional availability: each party is online for ``duty_cycle`` of every
``period_s`` seconds from a phase drawn uniformly (a daily on/off pattern).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsim.system.profiles import DeviceProfiles, check_availability, make_profiles
from fedsim.system.sources import DeviceSource, SystemParams, register
from fedsim.util.params import hp
from fedsim.util.seeding import derive


@dataclass
class SyntheticParams(SystemParams):
    compute_ms: float = hp(
        20.0, gt=0, help="median milliseconds per sample of a training step", source="order of FedScale's devices"
    )
    compute_spread: float = hp(
        0.7, ge=0, help="sigma of log(ms per sample) over parties (0: identical devices)", source="heavy tail"
    )
    upload_kbps: float = hp(1500.0, gt=0, help="median upload bandwidth, kbit/s", source="order of MobiPerf's")
    download_kbps: float = hp(6000.0, gt=0, help="median download bandwidth, kbit/s", source="order of MobiPerf's")
    bandwidth_spread: float = hp(
        0.8, ge=0, help="sigma of log(bandwidth) over parties (0: identical links)", source="heavy tail"
    )
    duty_cycle: float = hp(
        1.0, gt=0, le=1, help="share of each period a party is online (1: always)", source="1: always online"
    )
    period_s: float = hp(86400.0, gt=0, help="length of the on/off pattern, simulated seconds", source="a day")


def _windows(phase: np.ndarray, on: float, period: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each party's online window ``[phase, phase + on)`` folded into ``[0, period)``, as
    flat (owner, starts, ends) sorted by party then start: a window that passes the
    period's end is ``[0, phase + on - period)`` and ``[phase, period)``."""
    n = len(phase)
    end = phase + on
    wraps = end > period
    owner = np.concatenate([np.arange(n)[wraps], np.arange(n)])
    starts = np.concatenate([np.zeros(int(wraps.sum())), phase])
    ends = np.concatenate([end[wraps] - period, np.where(wraps, period, end)])
    order = np.lexsort((starts, owner))
    return owner[order], starts[order], ends[order]


@register
class Synthetic(DeviceSource):
    name = "synthetic"
    summary = "seeded log-normal device speeds and bandwidths, optional daily on/off availability"
    paper = "log-normal spread after FedScale's device traces (Lai et al. 2022)"
    Params = SyntheticParams

    def profiles(self, params: Any, n_parties: int, seed: int) -> DeviceProfiles:
        rng = np.random.default_rng(derive(seed, "system", "synthetic"))
        z = rng.standard_normal((2, n_parties))
        ms = params.compute_ms * np.exp(params.compute_spread * z[0])
        link = np.exp(params.bandwidth_spread * z[1])
        phase = rng.uniform(0.0, params.period_s, n_parties)  # drawn always: the speeds do not depend on it
        what = "system.source synthetic"
        profiles = make_profiles(n_parties, ms, params.upload_kbps * link, params.download_kbps * link, what)
        if params.duty_cycle < 1:
            windows = _windows(phase, params.duty_cycle * params.period_s, params.period_s)
            profiles.availability = check_availability(*windows, np.full(n_parties, params.period_s), what)
        return profiles
