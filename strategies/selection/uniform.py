"""Uniform selection: m of the parties that may train, each equally likely (fedsim's
draw since its first version; the default)."""

from __future__ import annotations

from typing import Any

from . import Pool, Selector, register, uniform_draw


@register
class Uniform(Selector):
    name = "uniform"
    summary = "m parties uniformly at random from (seed, round): the unbiased cohort of FedAvg"
    paper = "McMahan et al. 2017, Communication-Efficient Learning of Deep Networks from Decentralized Data"
    unbiased = True

    def select(self, params: Any, pool: Pool) -> list[int]:
        return uniform_draw(pool.parties, pool.m, pool.rng)
