"""``system.source: fedscale``: FedScale's device and availability traces.

``device_file``: FedScale's ``client_device_capacity`` (computation in ms per sample,
communication in kbit/s, used for upload and download as FedScale does);
``trace_file`` (optional): its ``client_behave_trace`` (active/inactive times repeating
every ``finish_time``). Both are pickles read by a restricted unpickler that runs
nothing (:mod:`fedsim.system.traces`), or JSON of the same structure. Parties are
mapped to trace clients by a permutation drawn from the seed; a trace with fewer
clients than the federation is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.system.profiles import DeviceProfiles, ProfileError, make_profiles
from fedsim.system.sources import DeviceSource, SystemParams, register
from fedsim.system.traces import fedscale_behaviour, fedscale_devices
from fedsim.util.params import hp
from fedsim.util.seeding import derive


@dataclass
class FedScaleParams(SystemParams):
    device_file: str | None = hp(
        None, help="FedScale's client_device_capacity (pickle or JSON)", source="FedScale's benchmark/dataset/data"
    )
    trace_file: str | None = hp(
        None, help="FedScale's client_behave_trace (pickle or JSON); null: always online", source="null"
    )


def _pick(clients: list[int], n_parties: int, seed: int, what: str) -> list[int]:
    """The trace clients of parties 0..n-1: a seeded draw without replacement."""
    if len(clients) < n_parties:
        raise ProfileError(
            f"{what} has {len(clients)} clients; the federation has {n_parties} parties: "
            f"a trace needs at least one client per party"
        )
    order = np.random.default_rng(derive(seed, "system", "fedscale")).permutation(len(clients))[:n_parties]
    return [clients[i] for i in order]


@register
class FedScale(DeviceSource):
    name = "fedscale"
    summary = "FedScale's client_device_capacity and client_behave_trace, read without executing anything"
    paper = "Lai et al. 2022, FedScale (ICML)"
    Params = FedScaleParams

    def profiles(self, params: Any, n_parties: int, seed: int) -> DeviceProfiles:
        if params.device_file is None:
            raise ProfileError("system.source fedscale needs system.device_file (FedScale's client_device_capacity)")
        devices = fedscale_devices(Path(params.device_file))
        chosen = _pick(sorted(devices), n_parties, seed, f"system.device_file '{params.device_file}'")
        ms = [devices[c][0] for c in chosen]
        kbps = [devices[c][1] for c in chosen]
        intervals = periods = None
        if params.trace_file is not None:
            behaviour = fedscale_behaviour(Path(params.trace_file))
            traced = _pick(sorted(behaviour), n_parties, seed, f"system.trace_file '{params.trace_file}'")
            intervals = [behaviour[c][0] for c in traced]
            periods = [behaviour[c][1] for c in traced]
        return make_profiles(n_parties, ms, kbps, kbps, "system.source fedscale", intervals, periods)
