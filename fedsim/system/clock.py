"""The simulated clock: how long a reply takes, and when a synchronous round ends.

A reply's simulated duration follows FedScale (Lai et al. 2022, ``fedscale/core/
execution/client.py``: ``exe_cost``)::

    compute  = augmentation_factor x batch_size x local_steps x ms_per_sample / 1000
    download = bytes_down x 8 / 1024 / download_kbps
    upload   = bytes_up   x 8 / 1024 / upload_kbps
    total    = download + compute + upload

from the work the party actually did (its reply's ``steps``: epoch ranges and
stragglers included) and the bytes actually sent each way (the message's records).

A round starts at the clock's time and ends (:func:`settle`) when the last reply it
aggregates arrives: the first K to arrive with over-selection (Bonawitz et al. 2019),
all of them otherwise; a reply later than ``system.round_deadline`` is dropped as late
(the server waited until the deadline), one whose party goes offline before it
finishes drops out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

#: bits of a FedScale kbit (FedScale sizes a model as bytes / 1024 * 8 kbit)
KBIT = 1024.0


def compute_seconds(augmentation_factor: float, batch_size: int, steps: int, ms_per_sample: float) -> float:
    """FedScale's compute time of ``steps`` local steps of ``batch_size`` samples."""
    return augmentation_factor * batch_size * steps * ms_per_sample / 1000.0


def transfer_seconds(nbytes: int, kbps: float) -> float:
    """FedScale's communication time of ``nbytes`` at ``kbps`` kbit/s."""
    return nbytes * 8.0 / KBIT / kbps


@dataclass
class ReplyTime:
    """One reply on the clock; ``status``: ok (aggregated), late, offline or surplus
    (over-selection: it arrived after the first K)."""

    party: int
    download_s: float
    compute_s: float
    upload_s: float
    status: str = "ok"

    @property
    def total_s(self) -> float:
        return self.download_s + self.compute_s + self.upload_s

    def fields(self) -> dict[str, float]:
        """What ``clients.jsonl`` records of it."""
        return {
            "sim_download_s": self.download_s,
            "sim_compute_s": self.compute_s,
            "sim_upload_s": self.upload_s,
            "sim_comm_s": self.download_s + self.upload_s,
            "sim_total_s": self.total_s,
        }


@dataclass
class RoundTiming:
    """One round on the clock: when it started and ended, and each reply's time."""

    round: int
    start_s: float
    end_s: float
    replies: list[ReplyTime] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.replies if r.status == status)


def settle(
    server_round: int,
    start_s: float,
    replies: list[ReplyTime],
    target: int | None,
    deadline: float | None,
    offline_at: Mapping[int, float],
) -> RoundTiming:
    """Mark each reply ok, late, offline or surplus and end the round (module docstring).

    ``target``: K of over-selection (None: every reply that arrives); ``deadline``:
    seconds after the start (None or inf: none); ``offline_at``: absolute time each
    party goes offline (missing: never).
    """
    limit = math.inf if deadline is None else deadline
    arriving = []
    for r in replies:
        if start_s + r.total_s > offline_at.get(r.party, math.inf):
            r.status = "offline"
        elif r.total_s > limit:
            r.status = "late"
        else:
            arriving.append(r)
    # ties in arrival go to the lower party id: the order is the same in every run
    arriving.sort(key=lambda r: (r.total_s, r.party))
    k = len(arriving) if target is None else min(target, len(arriving))
    for r in arriving[k:]:
        r.status = "surplus"
    kept = arriving[:k]
    if target is not None and k == target and kept:
        duration = kept[-1].total_s  # the K-th arrival: the server stops waiting
    elif any(r.status == "late" for r in replies):
        duration = limit  # it waited for the late ones until the deadline
    else:
        dropped = [offline_at[r.party] - start_s for r in replies if r.status == "offline"]
        duration = max([r.total_s for r in kept] + dropped + [0.0])
    return RoundTiming(server_round, start_s, start_s + duration, replies)
