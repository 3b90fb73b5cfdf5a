"""Feature-distribution skew by Gaussian noise (NIID-Bench's ``noise-based feature
imbalance``, Li et al., ICDE 2022): party i's inputs get x + N(0, s_i^2) noise with
s_i = sigma * i / (n - 1), so noise grows linearly from party 0 (clean) to party n-1."""

from __future__ import annotations

import math

import numpy as np


def noise_levels(sigma: float, n_parties: int) -> np.ndarray:
    """Per-party noise std ``sigma * i / (n_parties - 1)``, float64, shape (n_parties,).

    With one party there is no ramp; it gets the full ``sigma`` (so setting
    ``data.feature_noise`` is never a silent no-op).
    """
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, (int, float, np.number))
        or not (math.isfinite(float(sigma)) and float(sigma) >= 0)
    ):
        raise ValueError(f"data.feature_noise (sigma) must be a finite number >= 0; got {sigma!r}")
    if isinstance(n_parties, bool) or not isinstance(n_parties, (int, np.integer)) or n_parties < 1:
        raise ValueError(f"partition.n_parties must be an integer >= 1; got {n_parties!r}")
    if n_parties == 1:
        return np.array([float(sigma)], dtype=np.float64)
    return float(sigma) * np.arange(n_parties, dtype=np.float64) / (n_parties - 1)
