"""Availability-aware selection: prefer the parties the clock's traces keep online for
the whole round (the selection of availability-aware FL systems such as FedScale's
trace-driven runs and Bonawitz et al. 2019's "check-in" with devices that are idle and
charging; Lai et al. 2022, FedScale).

A party is expected to finish when it stays online at least its expected round duration
from the round's start: online_until(i) - start >= t_i (t_i from its profile:
download, compute of its local epochs, upload). The m parties are drawn uniformly (the
round's generator) among those expected to finish; if fewer are, all of them train and
the rest of the cohort is the parties that stay online longest. Without availability
traces every party stays online, and the draw is uniform selection's.
"""

from __future__ import annotations

from typing import Any

from . import Pool, Selector, register, uniform_draw


@register
class Available(Selector):
    name = "available"
    summary = "m parties uniformly among those the traces keep online for their whole round"
    paper = "Lai et al. 2022, FedScale; Bonawitz et al. 2019, Towards Federated Learning at Scale"
    needs_clock = True

    def select(self, params: Any, pool: Pool) -> list[int]:
        clock = pool.clock
        if clock is None or pool.m >= len(pool.parties):
            return uniform_draw(pool.parties, pool.m, pool.rng)
        left = {p: clock.online_until(p) - clock.start_s for p in pool.parties}
        finish = [p for p in pool.parties if left[p] >= clock.expected_s(p)]
        if len(finish) >= pool.m:
            return uniform_draw(finish, pool.m, pool.rng)
        can = set(finish)
        rest = sorted((p for p in pool.parties if p not in can), key=lambda p: (-left[p], p))
        return sorted(finish + rest[: pool.m - len(finish)])
