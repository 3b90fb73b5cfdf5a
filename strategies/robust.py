"""What the Krum family shares: distances between the replies, Krum scores, the
selections of Multi-Krum and Bulyan, and the number of Byzantine clients f a rule
assumes.

Distances. Krum's score needs squared distances ||u_i - u_j||^2 between the updates
u_k = w_k - w of one round. Flower 1.42's ``compute_distances`` expands them as
||x||^2 + ||y||^2 - 2 x.y in float32 on the full weights: when the updates are small
next to the weights the terms cancel (off by 59-569% on a GroupNorm ResNet-18, and a
reply's distance to itself below zero). Here they are summed directly,
sum_c (w_i[c] - w_j[c])^2, in float64 (u_i - u_j = w_i - w_j: the global model cancels
exactly), over the trainable entries every reply carries, and a reply's own entry is
left out of its score explicitly instead of assumed to sort first.

f. A robust rule is only as good as the f it assumes: f = 0 makes Multi-Krum a plain
average and Bulyan an untrimmed mean. ``num_malicious: -1`` (the default) takes f from
the config: with an attack, the malicious parties expected in a cohort,
ceil(M x cohort / N) for M malicious of N parties; without one, the largest f the rule
tolerates for the cohort (Krum and Multi-Krum: n > 2f + 2; Bulyan: n >= 4f + 3).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from .arrays import is_float
from .cohort import cohort_size, holdout_count, malicious_count
from .registry import Algorithm

#: ``strategy.num_malicious`` = -1: f from the config (see the module docstring)
AUTO_F = -1

# pairs of columns summed at once: (n x chunk) float64 stays under ~32 MB
_CHUNK_ELEMENTS = 1 << 22


def squared_distances(
    states: Sequence[Mapping[str, torch.Tensor]], keys: Sequence[str], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The (n, n) float64 matrix of sum over ``keys`` of (w_i - w_j)^2, summed directly
    (no norm expansion); the diagonal is exactly zero."""
    n = len(states)
    dist = torch.zeros(n, n, dtype=torch.float64, device=device)
    for key in keys:
        flat = [s[key].reshape(-1) for s in states]
        size = flat[0].numel()
        step = max(1, _CHUNK_ELEMENTS // max(n, 1))
        for lo in range(0, size, step):
            block = torch.stack([f[lo : lo + step] for f in flat]).to(device, torch.float64)
            for i in range(n - 1):
                diff = block[i + 1 :] - block[i]
                d = (diff * diff).sum(dim=1)
                dist[i, i + 1 :] += d
                dist[i + 1 :, i] += d
    return dist.cpu()


def distance_keys(states: Sequence[Mapping[str, torch.Tensor]], is_param: Callable[[str], bool]) -> list[str]:
    """The trainable float entries every reply carries (a personalised algorithm's
    replies hold only the shared layers), in the first reply's order."""
    first = states[0]
    return [k for k, v in first.items() if is_float(v) and is_param(k) and all(k in s for s in states[1:])]


def krum_scores(dist: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's score of each reply (Blanchard et al. 2017): the sum of its squared
    distances to its n - f - 2 nearest other replies (at least 1, at most n - 1; none
    for a single reply)."""
    n = dist.shape[0]
    k = min(max(n - f - 2, 1), n - 1)
    if k <= 0:
        return torch.zeros(n, dtype=torch.float64)
    others = dist.clone()
    others.fill_diagonal_(math.inf)  # a reply is not its own neighbour
    return others.sort(dim=1).values[:, :k].sum(dim=1)


def multikrum_select(dist: torch.Tensor, f: int, m: int) -> list[int]:
    """The m replies with the lowest Krum scores (Multi-Krum; m = 1 is Krum), ties to the
    lower index."""
    scores = krum_scores(dist, f)
    return sorted(int(i) for i in torch.argsort(scores, stable=True)[:m])


def bulyan_select(dist: torch.Tensor, f: int, theta: int) -> list[int]:
    """El Mhamdi et al. 2018's selection: Krum applied again and again, each time to the
    replies not chosen yet (scores over the remaining set), until theta are chosen."""
    remaining = list(range(dist.shape[0]))
    chosen: list[int] = []
    while len(chosen) < theta and remaining:
        sub = dist[remaining][:, remaining]
        best = int(torch.argmin(krum_scores(sub, f)))  # the first of equal scores
        chosen.append(remaining.pop(best))
    return sorted(chosen)


def median_closest_mean(stack: torch.Tensor, beta: int) -> torch.Tensor:
    """Per coordinate, the mean of the ``beta`` values closest to the coordinate-wise
    median (of an even count: the mean of the two middle values, as numpy's) of
    ``stack`` (n, ...); ties to the lower index."""
    n = stack.shape[0]
    ordered = stack.sort(dim=0).values
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    idx = torch.argsort((stack - median).abs(), dim=0, stable=True)[:beta]
    return torch.gather(stack, 0, idx).mean(dim=0)


# ---------------------------------------------------------------------- f


def expected_malicious(cfg: Any) -> int | None:
    """The malicious parties expected in a round's cohort, ceil(M x cohort / N), or None
    without an attack (``attack.name: none``)."""
    a = cfg.attack
    if getattr(a, "name", "none") == "none":
        return None
    n = cfg.partition.n_parties
    parties = getattr(a, "parties", None)
    m = len(parties) if parties is not None else malicious_count(getattr(a, "fraction", 0.0), n)
    cohort = config_cohort(cfg)
    return min(cohort, math.ceil(m * cohort / n - 1e-9))


def config_cohort(cfg: Any) -> int:
    """The cohort a round samples: federation.fraction_fit of the parties that train."""
    fed = cfg.federation
    n = cfg.partition.n_parties - holdout_count(fed.holdout_parties, cfg.partition.n_parties)
    return cohort_size(n, fed.fraction_fit, fed.min_fit_clients)


def resolve_f(f: int, cfg: Any, most_tolerated: Callable[[int], int]) -> tuple[int, str]:
    """(f, where it comes from) for ``strategy.num_malicious`` = ``f``: as given, or for
    ``AUTO_F`` the attack's expected malicious parties per cohort, else
    ``most_tolerated(cohort)``."""
    if f != AUTO_F:
        return f, "strategy.num_malicious"
    cohort = config_cohort(cfg)
    expected = expected_malicious(cfg)
    if expected is not None:
        return expected, f"the malicious parties expected in a cohort of {cohort} (attack.*)"
    return max(0, most_tolerated(cohort)), f"the most a cohort of {cohort} tolerates (no attack configured)"


# ------------------------------------------------------------- algorithms

#: why client-level DP refuses a robust aggregator (``Algorithm.client_dp_refusal``)
DP_REFUSAL = (
    "a robust aggregator picks among the individual client updates; the Gaussian mechanism's sensitivity "
    "C / (qN) bounds the mean only"
)


def krum_tolerates(n: int) -> int:
    """The largest f Krum and Multi-Krum allow for n replies: n > 2f + 2 (Blanchard et al. 2017)."""
    return (n - 3) // 2


def bulyan_tolerates(n: int) -> int:
    """The largest f Bulyan allows for n replies: n >= 4f + 3 (El Mhamdi et al. 2018)."""
    return (n - 3) // 4


def round_f(f: int, n: int, tolerates: Callable[[int], int]) -> int:
    """f for a round of n replies: ``f``, or for an unresolved -1 (``strategies.build``
    called without :func:`strategies.resolve`) the most n replies tolerate."""
    return max(0, tolerates(n)) if f == AUTO_F else f


class ByzantineRobust(Algorithm):
    """An aggregator that assumes f Byzantine clients (``strategy.num_malicious``, -1 =
    from the config: see the module docstring)."""

    robust = True
    client_dp_refusal = DP_REFUSAL
    #: the largest f the rule allows for n replies
    tolerates: ClassVar[Callable[[int], int]] = staticmethod(krum_tolerates)

    def resolve(self, params, cfg):
        f, why = resolve_f(params.num_malicious, cfg, self.tolerates)
        return dataclasses.replace(params, num_malicious=f), [f"{self.name}: f = {f}, {why}"]

    def check(self, cfg) -> str | None:
        """A cohort too small for the f the run assumes is refused (the rule's guarantee fails)."""
        f = self.resolve(cfg.strategy, cfg)[0].num_malicious
        n = config_cohort(cfg)
        if self.tolerates(n) >= f:
            return None
        source = (
            f"strategy.num_malicious={f}"
            if cfg.strategy.num_malicious != AUTO_F
            else f"f={f} (the attack's expected malicious parties)"
        )
        return (
            f"strategy '{self.name}' with {source} needs a cohort of at least {self.min_cohort(f)} clients; the "
            f"config samples {n} (partition.n_parties x federation.fraction_fit): lower f to {max(0, self.tolerates(n))} "
            "(strategy.num_malicious) or sample more clients"
        )

    @staticmethod
    def min_cohort(f: int) -> str:
        """The smallest cohort for f, as the rule states it."""
        return f"2f + 3 = {2 * f + 3}"
