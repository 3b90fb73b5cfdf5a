"""DP-SGD as the rest of fedsim sees it: whether the parties train with it
(:func:`trains_with_dpsgd`), and its rates, shared by the trainer
(:mod:`fedsim.client.dpsgd`, on each party) and the accountant (:mod:`fedsim.privacy.run`,
on the server, where every party's steps are known): Opacus's Poisson rate and the
steps of an epoch."""

from __future__ import annotations

import math

from fedsim.privacy.compat import PER_SAMPLE


def trains_with_dpsgd(cfg) -> bool:
    """Whether ``cfg``'s parties train with DP-SGD (``privacy.mode: dpsgd``) instead of
    the plain local training."""
    return cfg.privacy.mode in PER_SAMPLE


def sample_rate(n: int, batch_size: int) -> float:
    """q = 1 / ceil(n / B): Opacus's Poisson rate for a loader of batch size B (1 for n <= B)."""
    return 1.0 / max(1, math.ceil(n / batch_size))


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size)) if n else 0
