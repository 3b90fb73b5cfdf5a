"""Device-profile sources (``system.source``): plug-ins that give every party a profile.

A source is one file of this package (found on first use: no import line anywhere)
with a :class:`DeviceSource` subclass decorated with :func:`register`. Its ``Params``
subclasses :class:`SystemParams` (the keys every source shares: the deadline,
over-selection, FedScale's augmentation factor) and declares its own keys with ``hp``;
:meth:`DeviceSource.profiles` returns the parties' :class:`~fedsim.system.profiles.DeviceProfiles`
from the params, the party count and the run's seed, the same in every process.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from fedsim.privacy.compat import draws_own_cohort
from fedsim.schema.sections import SystemConfig
from fedsim.system.profiles import DeviceProfiles, ProfileError
from fedsim.util.params import field_default, hp
from fedsim.util.plugins import Plugin, Registry


@dataclass
class SystemParams(SystemConfig):
    """``system.*`` of every source that runs the clock (and ``round_deadline``: simulated
    seconds a round waits for replies, later ones dropped as late; null or .inf: none)."""

    # round_deadline stays the common key it is (SystemConfig): its range includes
    # infinity (= no deadline), which hp's ranges never admit; checked in DeviceSource.check
    over_selection: float = hp(
        1.0,
        ge=1,
        help="sample this factor more parties and aggregate the first K to finish",
        source="1: none; Bonawitz et al. 2019 use 1.3",
    )
    augmentation_factor: float = hp(
        3.0,
        gt=0,
        help="compute = factor x batch_size x local steps x ms_per_sample / 1000 (forward and backward)",
        source="FedScale's default (Lai et al. 2022)",
    )


class DeviceSource(Plugin):
    """One source of device profiles (module docstring)."""

    Params: type = SystemConfig

    def profiles(self, params: Any, n_parties: int, seed: int) -> DeviceProfiles | None:
        """Every party's profile (index = party id); None: no clock."""
        return None

    def check(self, cfg: Any) -> str | None:
        p = cfg.system
        if p.round_deadline is not None and not p.round_deadline > 0:
            return (
                f"config key 'system.round_deadline' = {p.round_deadline!r}; allowed: simulated seconds > 0, "
                ".inf or null (no deadline)"
            )
        try:
            profiles = profiles_of(p, cfg.partition.n_parties, cfg.seed)
        except ProfileError as exc:
            return str(exc)
        deadline = p.round_deadline is not None and math.isfinite(p.round_deadline)
        offline = profiles is not None and profiles.availability is not None
        if draws_own_cohort(cfg) and (p.over_selection != 1 or deadline or offline):
            return (
                f"system.source {self.name} with a deadline, over-selection or availability and client-level "
                "differential privacy: its accounting assumes its own Poisson cohort; "
                "use neither, or only the clock (no system.round_deadline, over_selection 1, always online)"
            )
        return None


#: the sources: the modules of fedsim/system/sources, listed in this order (then any other file's)
SOURCES: Registry[DeviceSource] = Registry(
    "device-profile source",
    "fedsim.system.sources",
    section="system",
    chooser="source",
    base=SystemConfig,
    ordered=True,
    first=("none", "synthetic", "fedscale", "file"),
)


def register(cls: type[DeviceSource]) -> type[DeviceSource]:
    """Class decorator: make a source available to ``system.source``."""
    return SOURCES.register(cls)


def get(name: str) -> DeviceSource:
    return SOURCES.get(name)


#: profiles made in this process, by what makes them (the config's check, the server and
#: the summary each ask: made once, 0.1 s at 10,000 parties, benchmarks/system_clock.py)
_MADE: dict[tuple, DeviceProfiles | None] = {}


def _key(params: Any, n_parties: int, seed: int) -> tuple:
    values = dataclasses.asdict(params)
    # a file named by the params is part of the key as it is now (edited files are read again)
    files = tuple(
        (v, os.stat(v).st_mtime_ns, os.stat(v).st_size)
        for v in values.values()
        if isinstance(v, str) and os.path.isfile(v)
    )
    return (type(params).__name__, tuple(sorted((k, repr(v)) for k, v in values.items())), n_parties, seed, files)


def profiles_of(params: Any, n_parties: int, seed: int) -> DeviceProfiles | None:
    """``params.source``'s profiles of ``n_parties`` (made once per process; not to be changed)."""
    key = _key(params, n_parties, seed)
    if key not in _MADE:
        if len(_MADE) >= 8:
            _MADE.clear()
        _MADE[key] = get(params.source).profiles(params, n_parties, seed)
    return _MADE[key]


def load_profiles(cfg: Any) -> DeviceProfiles | None:
    """The run's device profiles (None without a ``system`` source)."""
    return profiles_of(cfg.system, cfg.partition.n_parties, cfg.seed)


def common_defaults() -> dict[str, Any]:
    """The shared keys at their defaults (``system.source: none`` allows only these)."""
    return {f.name: field_default(f) for f in dataclasses.fields(SystemConfig) if f.name != "source"}


__all__ = ["SOURCES", "DeviceSource", "SystemParams", "common_defaults", "get", "load_profiles", "register"]
