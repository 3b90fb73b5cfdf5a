"""The dataset registry and the per-process cache."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import fedsim.data.registry as registry
from fedsim.data import DatasetBundle, available, clear_cache, load_dataset, register
from fedsim.errors import DataError
from fedsim.schema.sections import DataConfig


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def test_available_lists_every_family():
    assert available() == [
        "cifar10",
        "cifar100",
        "mnist",
        "fmnist",
        "svhn",
        "synthetic",
        "synthetic-images",
        "leaf-femnist",
        "leaf-shakespeare",
        "hf",
        "imagefolder",
    ]


def test_load_dataset_caches_the_same_object():
    cfg = DataConfig(dataset="synthetic-images", n_train=200, n_test=20)
    a = load_dataset(cfg, 0, 5)
    assert load_dataset(DataConfig(dataset="synthetic-images", n_train=200, n_test=20), 0, 5) is a
    # per-party settings do not change the data, so they do not miss the cache
    assert (
        load_dataset(
            DataConfig(dataset="synthetic-images", n_train=200, n_test=20, val_fraction=0.2, feature_noise=0.1), 0, 5
        )
        is a
    )
    assert load_dataset(DataConfig(dataset="synthetic-images", n_train=200, n_test=20, noise=0.3), 0, 5) is not a
    clear_cache()
    assert load_dataset(cfg, 0, 5) is not a


def test_synthetic_cache_depends_on_parties_only_through_groups():
    a = load_dataset(DataConfig(dataset="synthetic", n_train=500, n_test=50), 0, 5)
    assert load_dataset(DataConfig(dataset="synthetic", n_train=500, n_test=50), 0, 6) is not a
    g = load_dataset(DataConfig(dataset="synthetic", n_train=500, n_test=50, num_groups=4), 0, 5)
    assert load_dataset(DataConfig(dataset="synthetic", n_train=500, n_test=50, num_groups=4), 0, 6) is g


def test_register_a_new_dataset_and_concurrent_loads_build_it_once():
    calls = []

    @register("tiny-test-set")
    def tiny(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
        calls.append(seed)
        x = torch.arange(12, dtype=torch.float32).view(4, 3)
        y = torch.tensor([0, 1, 0, 1])
        return DatasetBundle("tiny-test-set", x, y, x[:2], y[:2], 2, None, None, False, np.array([0, 0, 1, 1]))

    try:
        assert "tiny-test-set" in available()
        cfg = DataConfig(dataset="tiny-test-set")
        results = []
        threads = [threading.Thread(target=lambda: results.append(load_dataset(cfg, 1, 2))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert calls == [1] and all(r is results[0] for r in results)
        b = results[0]
        assert b.input_shape == (3,) and not b.is_image
        with pytest.raises(ValueError, match="already registered"):
            register("tiny-test-set")(lambda c, s, n: b)
    finally:
        registry.unregister("tiny-test-set")


def test_unknown_dataset_suggests_the_nearest():
    with pytest.raises(DataError, match="did you mean 'cifar10'"):
        load_dataset(DataConfig(dataset="cifar-10"), 0, 1)


def test_bundle_reports_image_shape():
    b = load_dataset(DataConfig(dataset="synthetic-images", n_train=50, n_test=10, image_shape=[1, 8, 8]), 0, 1)
    assert b.input_shape == (1, 8, 8) and b.is_image
    assert "synthetic-images" in repr(b)
