"""Privacy accounting: the epsilon spent, from Google's ``dp-accounting``.

Every private release fedsim makes is a Poisson-subsampled Gaussian mechanism
(Mironov et al. 2019, "Renyi Differential Privacy of the Sampled Gaussian Mechanism"):

* client-level DP-FedAvg: one release a round, each party in the cohort with
  probability q = ``federation.fraction_fit``, noise multiplier sigma (its std over the
  clipping norm C);
* DP-SGD: one release a local step, each of party k's n_k samples in the batch with
  probability q_k = 1 / ceil(n_k / B) (Opacus's rate for a batch size B), sigma.

A composition of ``count`` such releases, ``(q, sigma, count)``, is a
``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), count)``; q = 1
is the plain Gaussian mechanism. The neighbouring relation is add-or-remove-one (of a
party for client-level DP, of a sample for DP-SGD). Two accountants of the library:

* ``rdp``: Renyi DP (Mironov 2017) converted to (epsilon, delta) with Balle et al. 2020's
  bound, what Opacus and Flower's own ``RdpAccountant`` report;
* ``pld``: privacy loss distributions (Koskela et al. 2020; Doroshenko et al. 2022),
  numerically tight, slower.

delta is a probability with which the guarantee may fail outright: a mechanism that
publishes one random member of a population of n in the clear is (0, 1/n)-DP. So delta
must be well below 1/n, n being the population the accountant protects (parties for
client-level DP, the largest party's training samples for DP-SGD: each party's own
samples are its population, and the largest has the smallest 1/n). It defaults to
min(1e-5, 0.1/n): the 1e-5 of Opacus's and TF Privacy's examples, always at least ten
times below 1/n (0.1/n takes over above n = 10,000); a delta >= 1/n is refused
(:func:`check_delta`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from fedsim.errors import ConfigError

ACCOUNTANTS = ("rdp", "pld")


class _OrderDropped(logging.Filter):
    """dp-accounting warns (through absl's logger, or the root one without absl) when a
    fractional RDP order's series does not converge and it leaves that order out: the
    bound stays valid, so it is not a user's concern."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


for _name in ("absl", ""):
    logging.getLogger(_name).addFilter(_OrderDropped())
INSTALL = "pip install 'fedsim[privacy]'"


def _lib():
    try:
        import dp_accounting
        from dp_accounting import pld, rdp
    except ImportError as exc:
        raise ConfigError(f"privacy.mode needs Google's dp-accounting for the epsilon spent: {INSTALL}") from exc
    return dp_accounting, rdp, pld


#: the largest default delta (Opacus's and TF Privacy's examples)
DELTA_CAP = 1e-5
#: the default delta is at most this share of 1/n ("well below 1/n")
DELTA_SHARE = 0.1


def default_delta(population: int) -> float:
    """min(1e-5, 0.1/n): the delta of the records when ``privacy.target_delta`` is not
    given (module docstring)."""
    return min(DELTA_CAP, DELTA_SHARE / max(int(population), 1))


def check_delta(delta: float, population: int, what: str) -> None:
    """ConfigError when a user's delta is not below 1/n for the population of ``what``
    (an (epsilon, delta) guarantee with delta >= 1/n allows publishing one member's
    data in the clear, whatever epsilon says)."""
    n = max(int(population), 1)
    if delta >= 1.0 / n:
        raise ConfigError(
            f"privacy.target_delta={delta:g} is not below 1/N = {1.0 / n:.3g} (N = {n} {what}): with such a delta "
            f"the guarantee allows publishing one of them outright, whatever epsilon says; use at most "
            f"{default_delta(n):.3g} (the default) or remove privacy.target_delta"
        )


def dp_event(q: float, sigma: float, count: int):
    """The dp-accounting event of ``count`` Poisson-subsampled Gaussian releases."""
    dpa, _, _ = _lib()
    gaussian = dpa.GaussianDpEvent(sigma)
    one = gaussian if q >= 1.0 else dpa.PoissonSampledDpEvent(q, gaussian)
    return dpa.SelfComposedDpEvent(one, int(count))


def epsilon(events: Iterable[tuple[float, float, int]], delta: float, accountant: str = "rdp") -> float:
    """epsilon at ``delta`` of the composition of ``(q, sigma, count)`` releases.

    0 for no release; inf when a release has no noise (sigma = 0) or samples nobody out
    (q > 0 with sigma = 0 reveals its input exactly).
    """
    events = [(float(q), float(s), int(c)) for q, s, c in events if c > 0 and q > 0]
    if not events:
        return 0.0
    if any(s <= 0 for _, s, _ in events):
        return math.inf
    if accountant == "rdp":
        return _rdp_epsilon(events, delta)
    _, _, pld = _lib()
    acc = pld.PLDAccountant()
    for q, s, c in events:
        acc.compose(dp_event(q, s, c))
    return float(acc.get_epsilon(delta))


@lru_cache(maxsize=4096)
def _rdp_per_release(q: float, sigma: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(orders, RDP of one release at each order): composing T releases is T times it."""
    _, rdp, _ = _lib()
    acc = rdp.RdpAccountant()
    acc.compose(dp_event(q, sigma, 1))
    return tuple(acc.orders), tuple(acc.rdp)


def _rdp_epsilon(events: list[tuple[float, float, int]], delta: float) -> float:
    """RDP's epsilon of a composition of ``(q, sigma, count)`` releases: each per-release
    curve is computed once per (q, sigma) and the curves add up, ``count`` times each
    (what the library's composition does: every accountant uses the same orders), so a
    round of DP-SGD accounting for 100 parties costs milliseconds."""
    _, rdp, _ = _lib()
    total = None
    for q, sigma, count in events:
        orders, per = _rdp_per_release(q, sigma)
        part = np.asarray(per) * count
        total = part if total is None else total + part
    eps, _ = rdp.rdp_privacy_accountant.compute_epsilon(orders, list(total), delta)
    return float(eps)


#: the noise multipliers calibration searches between
SIGMA_MIN, SIGMA_MAX = 1e-3, 1e4


def calibrate_sigma(eps_of_sigma, target: float, what: str) -> float:
    """The smallest noise multiplier whose epsilon (``eps_of_sigma(sigma)``) is at most
    ``target``: bisection on log sigma (epsilon falls as sigma grows)."""
    lo, hi = SIGMA_MIN, SIGMA_MAX
    if eps_of_sigma(hi) > target:
        raise ConfigError(f"privacy.target_epsilon={target:g} cannot be met {what} even with noise_multiplier {hi:g}")
    if eps_of_sigma(lo) <= target:
        return lo
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if eps_of_sigma(mid) <= target:
            hi = mid
        else:
            lo = mid
        if hi / lo < 1 + 1e-6:
            break
    return hi
