"""The epsilon fedsim reports (fedsim/privacy/accounting.py) against independent computations.

* the Gaussian mechanism without sampling, by hand: T releases of multiplier sigma have
  RDP T a / (2 sigma^2) at order a, and Balle et al. 2020's conversion gives
  eps = min_a [T a / (2 sigma^2) + log((a - 1)/a) - (log delta + log a) / (a - 1)];
* a subsampled setting (q = 0.01, sigma = 1.1, 10,000 steps, delta = 1e-5) against two
  accountants of another library: Opacus's RDP (its own implementation of Mironov et al.
  2019) and its PRV accountant (Gopi et al. 2021) for dp-accounting's PLD.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("dp_accounting", reason="pip install 'fedsim[privacy]'")

from fedsim.errors import ConfigError  # noqa: E402
from fedsim.privacy.accounting import calibrate_sigma, check_delta, default_delta, epsilon  # noqa: E402


def test_gaussian_without_sampling_by_hand():
    sigma, T, delta = 2.0, 10, 1e-5
    orders = np.concatenate([np.linspace(1.01, 8, 700), np.arange(8, 512)])
    by_hand = min(
        T * a / (2 * sigma**2) + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1) for a in orders
    )
    ours = epsilon([(1.0, sigma, T)], delta, "rdp")
    # dp-accounting optimises over its own grid of orders: within 0.5% of a fine grid
    assert ours == pytest.approx(by_hand, rel=5e-3)
    # PLD is tight: never above RDP's bound
    assert epsilon([(1.0, sigma, T)], delta, "pld") <= ours


def test_subsampled_setting_against_opacus_rdp_and_prv():
    opacus = pytest.importorskip("opacus", reason="pip install 'fedsim[privacy]'")
    from opacus.accountants import PRVAccountant, RDPAccountant
    from opacus.accountants.analysis import rdp as opacus_rdp

    q, sigma, steps, delta = 0.01, 1.1, 10_000, 1e-5
    alphas = RDPAccountant.DEFAULT_ALPHAS
    theirs, _ = opacus_rdp.get_privacy_spent(
        orders=alphas,
        rdp=opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=alphas),
        delta=delta,
    )
    ours = epsilon([(q, sigma, steps)], delta, "rdp")
    assert ours == pytest.approx(5.632, abs=2e-3)
    assert ours == pytest.approx(float(theirs), rel=1e-3)
    prv = PRVAccountant()
    prv.history = [(sigma, q, steps)]
    pld = epsilon([(q, sigma, steps)], delta, "pld")
    assert pld == pytest.approx(prv.get_epsilon(delta), rel=1e-2)
    assert pld < ours  # the numerical accountants are tighter than RDP
    assert opacus.__version__


def test_composition_adds_up_and_degenerate_cases():
    # 3 + 7 releases of the same mechanism are 10 releases
    assert epsilon([(0.1, 1.0, 3), (0.1, 1.0, 7)], 1e-5) == pytest.approx(epsilon([(0.1, 1.0, 10)], 1e-5), rel=1e-9)
    assert epsilon([], 1e-5) == 0.0
    assert epsilon([(0.5, 1.0, 0)], 1e-5) == 0.0
    assert epsilon([(0.5, 0.0, 1)], 1e-5) == math.inf
    # more noise, less epsilon; more rounds, more epsilon
    assert epsilon([(1.0, 2.0, 5)], 1e-3) < epsilon([(1.0, 1.0, 5)], 1e-3) < epsilon([(1.0, 1.0, 6)], 1e-3)


def test_default_delta_is_at_most_1e5_and_a_tenth_of_one_over_n():
    # small federations: 1e-5, not 1/N^1.1 (0.079 for 10 parties, 0.47 for 2)
    assert default_delta(2) == default_delta(10) == default_delta(8000) == 1e-5
    # large populations: ten times below 1/N
    assert default_delta(60_000) == pytest.approx(1 / 600_000)
    assert all(default_delta(n) <= min(1e-5, 0.1 / n) for n in (1, 2, 10, 10_000, 10**7))


def test_a_delta_not_below_one_over_n_is_refused():
    check_delta(0.49, 2, "parties")  # below 1/2: allowed
    with pytest.raises(ConfigError, match=r"target_delta=0.5 is not below 1/N = 0.5 \(N = 2 parties\)") as info:
        check_delta(0.5, 2, "parties")
    assert "publishing one of them outright" in str(info.value)
    with pytest.raises(ConfigError, match="N = 800 training samples"):
        check_delta(0.002, 800, "training samples")


def test_mixed_noise_composes_as_the_library_composes_it():
    """The RDP fast path (per-release curves added up) against dp-accounting's own
    composition, for a ledger whose rounds used two noise multipliers."""
    from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent
    from dp_accounting.rdp import RdpAccountant

    acc = RdpAccountant()
    acc.compose(SelfComposedDpEvent(PoissonSampledDpEvent(0.3, GaussianDpEvent(1.0)), 2))
    acc.compose(SelfComposedDpEvent(PoissonSampledDpEvent(0.3, GaussianDpEvent(1.7)), 3))
    mixed = epsilon([(0.3, 1.0, 2), (0.3, 1.7, 3)], 1e-5)
    assert mixed == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)
    # between all five rounds at the smaller and at the larger noise
    assert epsilon([(0.3, 1.7, 5)], 1e-5) < mixed < epsilon([(0.3, 1.0, 5)], 1e-5)


def test_calibration_finds_the_smallest_sufficient_noise():
    def eps(s):
        return epsilon([(0.1, s, 50)], 1e-5)

    sigma = calibrate_sigma(eps, 2.0, "test")
    assert eps(sigma) <= 2.0
    assert eps(sigma * 0.999) > 2.0
