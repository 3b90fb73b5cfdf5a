"""FedProx's Synthetic(alpha, beta) tabular data (Li et al. 2020, "Federated Optimization
in Heterogeneous Networks", Sec. 5.1 and its ``generate_niid.py``; NIID-Bench uses it too).

Each of G groups (a "device" in the paper; G = ``data.num_groups``, or the number of
parties when 0) has its own softmax-regression model and its own input distribution::

    u_k ~ N(0, alpha)   B_k ~ N(0, beta)                      model / input heterogeneity
    W_k in R^{10x60} ~ N(u_k, 1)   b_k in R^10 ~ N(u_k, 1)
    v_k in R^60, (v_k)_j ~ N(B_k, 1)
    x ~ N(v_k, Sigma),  Sigma = diag(j^-1.2), j = 1..60
    y = argmax softmax(W_k x + b_k)

As in the reference code, the second argument of N(., .) is used as the standard
deviation (``np.random.normal(0, alpha)``); at the default alpha = beta = 1 the two
readings agree. Group sizes follow the reference's power law, lognormal(4, 2) + 50,
rescaled so all groups together hold ``n_train + n_test`` samples; from each group the
share ``n_test / (n_train + n_test)`` is held out, and those held-out samples form the
global test set. ``groups`` gives each training sample its group, for the ``natural``
partition.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import torch

from fedsim.data.registry import DatasetBundle, register
from fedsim.errors import DataError
from fedsim.schema.sections import DataConfig
from fedsim.util.memory import check_fits

DIM = 60
NUM_CLASSES = 10


def apportion(weights: np.ndarray, total: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Integers ``lo <= n <= hi`` summing to ``total``, as close as possible to
    ``total * weights / sum(weights)`` (largest remainder, then bounds repaired).
    """
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    if lo.sum() > total or hi.sum() < total or np.any(lo > hi):
        raise ValueError(f"cannot apportion {total} within bounds [{lo.sum()}, {hi.sum()}]")
    ideal = total * weights / weights.sum()
    n = np.clip(np.floor(ideal).astype(np.int64), lo, hi)
    # one unit at a time to the group furthest below (or above) its ideal: at most
    # len(weights) steps after the floor, plus the repair of clipped groups
    while n.sum() < total:
        gap = np.where(n < hi, ideal - n, -np.inf)
        n[int(np.argmax(gap))] += 1
    while n.sum() > total:
        gap = np.where(n > lo, ideal - n, np.inf)
        n[int(np.argmin(gap))] -= 1
    return n


def generate_synthetic(
    alpha: float, beta: float, n_groups: int, n_train: int, n_test: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, groups, x_test, y_test`` (float32 features, int64 labels)."""
    total = n_train + n_test
    sizes_raw = rng.lognormal(4, 2, n_groups) + 50
    sizes = apportion(sizes_raw, total, np.ones(n_groups, np.int64), np.full(n_groups, total, np.int64))
    # every group keeps at least one training sample (a party built from it is never empty)
    n_tr = apportion(sizes.astype(np.float64), n_train, np.ones(n_groups, np.int64), sizes)

    u = rng.normal(0.0, alpha, n_groups)  # mean of W_k and b_k
    big_b = rng.normal(0.0, beta, n_groups)  # mean of v_k
    sd = np.power(np.arange(1, DIM + 1, dtype=np.float64), -1.2 / 2)  # sqrt of Sigma's diagonal

    xs_tr, ys_tr, gs, xs_te, ys_te = [], [], [], [], []
    for k in range(n_groups):
        w = rng.normal(u[k], 1.0, (NUM_CLASSES, DIM))
        b = rng.normal(u[k], 1.0, NUM_CLASSES)
        v = rng.normal(big_b[k], 1.0, DIM)
        x = v + sd * rng.standard_normal((int(sizes[k]), DIM))
        y = np.argmax(x @ w.T + b, axis=1)  # softmax is monotone: argmax of the logits
        t = int(n_tr[k])
        xs_tr.append(x[:t]), ys_tr.append(y[:t]), gs.append(np.full(t, k, np.int64))
        xs_te.append(x[t:]), ys_te.append(y[t:])

    # samples of a group are i.i.d., so taking the first ones for training is a random
    # split; shuffle so that the order carries no group information
    p_tr, p_te = rng.permutation(n_train), rng.permutation(n_test)
    x_tr = np.concatenate(xs_tr).astype(np.float32)[p_tr]
    y_tr = np.concatenate(ys_tr).astype(np.int64)[p_tr]
    g_tr = np.concatenate(gs)[p_tr]
    x_te = np.concatenate(xs_te).astype(np.float32)[p_te]
    y_te = np.concatenate(ys_te).astype(np.int64)[p_te]
    return x_tr, y_tr, g_tr, x_te, y_te


def _n_groups(cfg: DataConfig, n_parties: int) -> int:
    return int(cfg.num_groups) if int(cfg.num_groups) > 0 else int(n_parties)


def _key(cfg: DataConfig, seed: int, n_parties: int) -> Hashable:
    return (
        float(cfg.synthetic_alpha),
        float(cfg.synthetic_beta),
        _n_groups(cfg, n_parties),
        int(cfg.n_train),
        int(cfg.n_test),
        cfg.augment,
        seed,
    )


@register(
    "synthetic",
    reads=("seed", "n_train", "n_test", "synthetic_alpha", "synthetic_beta", "num_groups"),
    key=_key,
    spec=lambda cfg: ((DIM,), NUM_CLASSES),
    summary="Synthetic(alpha, beta): 60 features, 10 classes, one generating group per party (data.synthetic_*)",
    paper="Li et al. 2020, Federated Optimization in Heterogeneous Networks (FedProx)",
)
def load_synthetic(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
    """Synthetic(alpha, beta): 60 features, 10 classes, one group per party unless set."""
    g = _n_groups(cfg, n_parties)
    # float64 features while generating, float32 kept, and each group's model
    check_fits(
        (cfg.n_train + cfg.n_test) * DIM * (8 + 4) + max(g, 1) * (DIM + 1) * NUM_CLASSES * 8,
        f"synthetic ({cfg.n_train} + {cfg.n_test} samples, {g} groups)",
        "lower data.n_train, data.n_test or data.num_groups",
    )
    if g < 1:
        raise DataError(
            f"dataset 'synthetic' needs at least one group: data.num_groups = {cfg.num_groups}, n_parties = {n_parties}"
        )
    if cfg.n_train < g:
        raise DataError(
            f"config key 'data.n_train' = {cfg.n_train} is too small for {g} synthetic groups; "
            f"need at least one training sample per group"
        )
    if cfg.augment:
        raise DataError("config key 'data.augment' = true needs an image dataset; 'synthetic' is tabular")
    rng = np.random.default_rng(seed)
    x_tr, y_tr, g_tr, x_te, y_te = generate_synthetic(
        float(cfg.synthetic_alpha), float(cfg.synthetic_beta), g, int(cfg.n_train), int(cfg.n_test), rng
    )
    return DatasetBundle(
        "synthetic",
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr),
        torch.from_numpy(x_te),
        torch.from_numpy(y_te),
        NUM_CLASSES,
        None,
        None,
        False,
        g_tr,
    )
