"""synthetic (FedProx Synthetic(alpha, beta)) and synthetic-images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.data import clear_cache, load_dataset
from fedsim.data.synthetic import apportion, generate_synthetic
from fedsim.data.synthetic_images import channel_stats, generate_images
from fedsim.errors import DataError
from fedsim.schema.sections import DataConfig


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def syn(**kw) -> DataConfig:
    return DataConfig(dataset="synthetic", **kw)


def img(**kw) -> DataConfig:
    kw.setdefault("n_train", 600)
    kw.setdefault("n_test", 100)
    return DataConfig(dataset="synthetic-images", **kw)


# ------------------------------------------------------------------- synthetic


def test_synthetic_sizes_dtypes_groups():
    b = load_dataset(syn(n_train=3000, n_test=500), seed=0, n_parties=7)
    assert b.x_train.shape == (3000, 60) and b.x_train.dtype == torch.float32
    assert b.x_test.shape == (500, 60) and b.y_test.dtype == torch.int64
    assert b.input_shape == (60,) and not b.is_image
    assert b.num_classes == 10 and b.mean is None and b.std is None and b.augment is False
    assert int(b.y_train.min()) >= 0 and int(b.y_train.max()) < 10
    assert b.groups is not None and len(b.groups) == 3000
    assert sorted(np.unique(b.groups)) == list(range(7))  # one group per party, none empty


def test_synthetic_num_groups_overrides_parties():
    b = load_dataset(syn(n_train=2000, n_test=200, num_groups=13), seed=1, n_parties=4)
    assert len(np.unique(b.groups)) == 13


def test_synthetic_is_deterministic_by_seed():
    a = load_dataset(syn(n_train=1000, n_test=100), 3, 5)
    clear_cache()
    b = load_dataset(syn(n_train=1000, n_test=100), 3, 5)
    assert a is not b
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert np.array_equal(a.groups, b.groups)
    c = load_dataset(syn(n_train=1000, n_test=100), 4, 5)
    assert not torch.equal(a.x_train, c.x_train)


def test_synthetic_follows_the_generative_model():
    # Within a group x ~ N(v_k, diag(j^-1.2)): the per-feature variance inside each group
    # matches Sigma; across groups the means v_k differ by ~ N(B_k, 1).
    x, y, g, xt, yt = generate_synthetic(1.0, 1.0, 3, 30000, 3000, np.random.default_rng(0))
    diag = np.arange(1, 61, dtype=np.float64) ** -1.2
    for k in range(3):
        xk = x[g == k].astype(np.float64)
        assert len(xk) > 500
        ratio = xk.var(axis=0) / diag
        assert np.all(np.abs(ratio - 1) < 0.35), ratio
        assert np.abs(ratio.mean() - 1) < 0.05
    means = np.stack([x[g == k].mean(0) for k in range(3)])
    assert np.abs(means[0] - means[1]).mean() > 0.3
    # labels come from a group's own linear model: a few classes dominate within a group
    for k in range(3):
        counts = np.bincount(y[g == k], minlength=10)
        assert counts.max() > 2 * len(y[g == k]) / 10


def test_synthetic_test_share_is_held_out_per_group():
    x, y, g, xt, yt = generate_synthetic(0.5, 0.5, 20, 4000, 1000, np.random.default_rng(2))
    assert len(x) == 4000 and len(xt) == 1000 and len(g) == 4000
    sizes = np.bincount(g, minlength=20)
    assert sizes.min() >= 1
    # power-law sizes: the largest group is much larger than the median
    assert sizes.max() > 3 * np.median(sizes)


def test_synthetic_too_small_for_groups_is_a_data_error():
    with pytest.raises(DataError, match="n_train"):
        load_dataset(syn(n_train=5, n_test=5), 0, 10)


def test_apportion_respects_total_and_bounds():
    w = np.array([1.0, 100.0, 3.0, 0.01])
    n = apportion(w, 50, np.ones(4, np.int64), np.array([50, 50, 50, 50]))
    assert n.sum() == 50 and n.min() >= 1
    assert n.tolist() == [1, 47, 1, 1]  # ideal [0.48, 48.1, 1.44, 0.005], then the lower bounds
    n = apportion(np.ones(3), 10, np.zeros(3, np.int64), np.array([2, 10, 10]))
    assert n.sum() == 10 and n[0] <= 2
    with pytest.raises(ValueError):
        apportion(np.ones(3), 2, np.ones(3, np.int64), np.full(3, 5))


# ------------------------------------------------------------ synthetic-images


def test_synthetic_images_sizes_and_balance():
    b = load_dataset(img(n_train=605, n_test=101, image_shape=[3, 16, 20], num_classes=5), 0, 3)
    assert b.x_train.shape == (605, 3, 16, 20) and b.x_train.dtype == torch.uint8
    assert b.x_test.shape == (101, 3, 16, 20) and b.input_shape == (3, 16, 20) and b.is_image
    assert b.num_classes == 5 and b.augment is False and b.groups is None
    assert torch.bincount(b.y_train, minlength=5).tolist() == [121] * 5
    assert torch.bincount(b.y_test, minlength=5).tolist() == [21, 20, 20, 20, 20]
    assert len(b.mean) == len(b.std) == 3
    # labels are shuffled, not in blocks
    assert (b.y_train[1:] != b.y_train[:-1]).float().mean() > 0.6


def test_synthetic_images_is_deterministic_by_seed():
    a = load_dataset(img(), 7, 10)
    clear_cache()
    b = load_dataset(img(), 7, 10)
    assert a is not b
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.mean == b.mean and a.std == b.std
    c = load_dataset(img(), 8, 10)
    assert not torch.equal(a.x_train, c.x_train)
    # the party count does not change the data (the cache key ignores it too)
    assert load_dataset(img(), 7, 99) is b


def test_synthetic_images_stats_are_those_of_the_training_set():
    b = load_dataset(img(image_shape=[2, 12, 12]), 0, 1)
    x = b.x_train.double() / 255
    assert np.allclose(b.mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-9)
    assert np.allclose(b.std, x.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-9)
    assert channel_stats(b.x_train) == (b.mean, b.std)


def test_synthetic_images_noise_sets_within_class_spread():
    def spread(noise):
        x, y, _, _ = generate_images(400, 10, (1, 16, 16), 4, noise, seed=0)
        x = x.double()
        return float(np.mean([x[y == k].std(0).mean() for k in range(4)]))

    assert spread(0.0) < spread(0.3) < spread(0.9)


def test_synthetic_images_are_learnable_by_nearest_class_mean():
    # A sanity floor for the calibration (a CNN reaches ~0.87 at noise 0.6; see the
    # module docstring): even a linear nearest-mean rule is far above chance (0.1).
    b = load_dataset(img(n_train=2000, n_test=500), 0, 1)
    xtr, xte = b.x_train.flatten(1).double(), b.x_test.flatten(1).double()
    means = torch.stack([xtr[b.y_train == k].mean(0) for k in range(10)])
    pred = torch.cdist(xte, means).argmin(1)
    acc = (pred == b.y_test).double().mean().item()
    assert acc > 0.4
    # and a harder noise setting is harder
    clear_cache()
    hard = load_dataset(img(n_train=2000, n_test=500, noise=2.0), 0, 1)
    htr, hte = hard.x_train.flatten(1).double(), hard.x_test.flatten(1).double()
    hmeans = torch.stack([htr[hard.y_train == k].mean(0) for k in range(10)])
    hacc = (torch.cdist(hte, hmeans).argmin(1) == hard.y_test).double().mean().item()
    assert hacc < acc


def test_synthetic_images_large_shape_takes_the_fallback_path_identically(monkeypatch):
    import fedsim.data.synthetic_images as si

    a = generate_images(300, 20, (3, 16, 16), 10, 0.6, seed=4)
    monkeypatch.setattr(si, "_WINDOW_BUDGET", 0)  # force per-pixel indexing
    b = generate_images(300, 20, (3, 16, 16), 10, 0.6, seed=4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
