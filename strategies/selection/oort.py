"""Oort (Lai, Zhu, Madhyastha, Chowdhury 2021, "Oort: Efficient Federated Learning via
Guided Participant Selection", OSDI), on fedsim's simulated clock.

A party i that has trained has the utility

    U_i = |B_i| sqrt(1/|B_i| sum_{k in B_i} Loss(k)^2)          (statistical utility)
          + sqrt(0.1 ln R / L_i)                                 (staleness bonus)
    U_i *= (T / t_i)^alpha   when t_i > T                        (system utility)

with |B_i| its training samples, Loss(k) the per-sample losses it last reported (the
received global model's on its data: ``global_loss_rms``), R the current round, L_i the
round it last trained in, t_i its last simulated round duration and T the preferred
round duration: the ``round_threshold`` percentile of the candidates' durations. As in
Oort's reference code the statistical utilities are min-max normalised over the explored
parties before the bonus is added.

Of the m parties, a share epsilon_R = max(epsilon_0 decay^(R-1), epsilon_min) explores
(parties that never trained, by data size times the same duration penalty on the
clock's expected duration, among the ``sample_window`` x their number largest), the rest
exploits: the explored parties whose utility is at least ``cut_off`` times the m_exploit-th
largest, drawn in proportion to it. Every draw uses the round's generator.

Defaults are those of Oort's reference code as FedScale ships it (exploration_factor 0.9,
exploration_decay 0.98, exploration_min 0.3, round_threshold 30, round_penalty 2,
clip_bound 0.9 as the cut-off, sample_window 5). Oort's pacer, which raises T when the
utilities stall, is not simulated: T is the percentile every round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import Pool, SelectionParams, Selector, hp, register

_SOURCE = "Oort's reference code in FedScale (Lai et al. 2021, 2022)"


@dataclass
class OortParams(SelectionParams):
    exploration: float = hp(0.9, ge=0, le=1, help="the first round's exploration share epsilon_0", source=_SOURCE)
    exploration_decay: float = hp(0.98, gt=0, le=1, help="epsilon shrinks by this factor a round", source=_SOURCE)
    exploration_min: float = hp(0.3, ge=0, le=1, help="epsilon's floor", source=_SOURCE)
    round_threshold: float = hp(
        30.0, gt=0, le=100, help="T: this percentile of the candidates' round durations", source=_SOURCE
    )
    round_penalty: float = hp(2.0, ge=0, help="alpha: (T/t_i)^alpha for a party slower than T", source=_SOURCE)
    cut_off: float = hp(
        0.9, gt=0, le=1, help="exploit among utilities >= cut_off x the m-th largest", source=_SOURCE + " (clip_bound)"
    )
    sample_window: float = hp(
        5.0, ge=1, help="explore among the sample_window x n_explore largest by data size", source=_SOURCE
    )


def epsilon(params: Any, server_round: int) -> float:
    """The exploration share of ``server_round`` (a function of the round: resumes exactly)."""
    return max(params.exploration * params.exploration_decay ** (server_round - 1), params.exploration_min)


def duration_of(pool: Pool, party: int) -> float:
    """t_i: the party's last simulated duration, else the clock's expected one."""
    last = pool.history.duration_s.get(party)
    if last is not None:
        return last
    return pool.clock.expected_s(party) if pool.clock is not None else 0.0


def preferred_duration(params: Any, pool: Pool) -> float:
    """T: the ``round_threshold`` percentile of the candidates' durations (Oort's
    ``round_prefer_duration``: the sorted durations' element at that share)."""
    times = sorted(duration_of(pool, p) for p in pool.parties)
    if not times:
        return math.inf
    return times[min(int(len(times) * params.round_threshold / 100.0), len(times) - 1)]


def system_factor(params: Any, t: float, prefer: float) -> float:
    """(T / t)^alpha for a party slower than T, else 1."""
    return (prefer / max(t, 1e-4)) ** params.round_penalty if t > prefer else 1.0


def utilities(params: Any, pool: Pool) -> dict[int, float]:
    """U_i of the explored candidates (module docstring)."""
    hist = pool.history
    explored = [p for p in pool.parties if hist.count.get(p, 0) > 0 and p in hist.loss]
    if not explored:
        return {}
    stat = {p: pool.sizes[p] * hist.loss_rms.get(p, hist.loss[p]) for p in explored}
    lo, hi = min(stat.values()), max(stat.values())
    span = hi - lo if hi > lo else 1.0
    prefer = preferred_duration(params, pool)
    out = {}
    for p in explored:
        bonus = math.sqrt(0.1 * math.log(max(pool.round, 1)) / max(hist.round[p], 1))
        out[p] = ((stat[p] - lo) / span + bonus) * system_factor(params, duration_of(pool, p), prefer)
    return out


def _draw(rng: np.random.Generator, parties: list[int], weights: list[float], k: int) -> list[int]:
    """k of ``parties`` without replacement, in proportion to ``weights``."""
    if k >= len(parties):
        return list(parties)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else None
    return [parties[i] for i in rng.choice(len(parties), size=k, replace=False, p=w)]


def exploit(params: Any, pool: Pool, scores: dict[int, float], k: int) -> list[int]:
    """k explored parties: those at least ``cut_off`` x the k-th largest utility, by utility."""
    if k <= 0 or not scores:
        return []
    ranked = sorted(scores, key=lambda p: (-scores[p], p))
    bar = params.cut_off * scores[ranked[min(k, len(ranked)) - 1]]
    above = [p for p in ranked if scores[p] >= bar]
    return _draw(pool.rng, above, [max(scores[p], 1e-12) for p in above], min(k, len(above)))


def explore(params: Any, pool: Pool, k: int, taken: set[int]) -> list[int]:
    """k parties that never trained, by data size times the duration penalty."""
    fresh = [p for p in pool.parties if pool.history.count.get(p, 0) == 0 and p not in taken]
    if k <= 0 or not fresh:
        return []
    prefer = preferred_duration(params, pool)
    reward = {p: pool.sizes[p] * system_factor(params, duration_of(pool, p), prefer) for p in fresh}
    window = sorted(fresh, key=lambda p: (-reward[p], p))[: max(k, int(params.sample_window * k))]
    return _draw(pool.rng, window, [max(reward[p], 1e-12) for p in window], min(k, len(window)))


@register
class Oort(Selector):
    name = "oort"
    summary = "statistical utility times system utility, an exploration share and a staleness bonus"
    paper = "Lai et al. 2021, Oort: Efficient Federated Learning via Guided Participant Selection (OSDI)"
    Params = OortParams
    needs_clock = True
    keeps_history = True
    asks_global_loss = True

    def select(self, params: Any, pool: Pool) -> list[int]:
        if pool.m >= len(pool.parties):
            return list(pool.parties)
        scores = utilities(params, pool)
        n_explore = int(round(pool.m * epsilon(params, pool.round)))
        chosen = exploit(params, pool, scores, min(pool.m - n_explore, len(scores)))
        chosen += explore(params, pool, pool.m - len(chosen), set(chosen))
        if len(chosen) < pool.m:  # too few unexplored: the best remaining explored ones
            rest = sorted((p for p in scores if p not in chosen), key=lambda p: (-scores[p], p))
            chosen += rest[: pool.m - len(chosen)]
        if len(chosen) < pool.m:  # parties with no loss yet (their replies failed): by size
            rest = sorted((p for p in pool.parties if p not in chosen), key=lambda p: (-pool.sizes[p], p))
            chosen += rest[: pool.m - len(chosen)]
        return sorted(chosen)
