"""heterogeneity() against hand computations; Dirichlet's skew against beta; the table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import partitioners

KEYS = {
    "n_parties",
    "n_samples",
    "n_classes",
    "class_counts",
    "size_mean",
    "size_std",
    "size_cv",
    "size_min",
    "size_max",
    "classes_per_party_mean",
    "classes_per_party_min",
    "classes_per_party_max",
    "tv_mean",
    "tv_max",
    "js_mean",
    "js_max",
    "hellinger_mean",
    "hellinger_max",
    "effective_classes_mean",
    "effective_classes_min",
    "global_effective_classes",
}


def balanced(per_class: int = 100, k: int = 10) -> np.ndarray:
    return np.repeat(np.arange(k), per_class)


def js_by_hand(p: list[float], q: list[float]) -> float:
    m = [(a + b) / 2 for a, b in zip(p, q)]
    kl = lambda x, y: sum(a * math.log2(a / b) for a, b in zip(x, y) if a > 0)  # noqa: E731
    return math.sqrt(0.5 * kl(p, m) + 0.5 * kl(q, m))


def test_one_class_party_against_hand_values():
    labels = balanced()
    d = {0: np.flatnonzero(labels == 0), 1: np.flatnonzero(labels != 0)}
    h = partitioners.heterogeneity(labels, d)
    assert set(h) == KEYS
    json.dumps(h)  # plain Python types only
    q = [0.1] * 10
    p0 = [1.0] + [0.0] * 9
    p1 = [0.0] + [1 / 9] * 9
    assert h["tv_max"] == pytest.approx(0.9)
    assert h["tv_mean"] == pytest.approx((0.9 + 0.1) / 2)
    hel0 = math.sqrt(1 - math.sqrt(0.1))
    hel1 = math.sqrt(1 - sum(math.sqrt(a * b) for a, b in zip(p1, q)))
    assert h["hellinger_max"] == pytest.approx(hel0)
    assert h["hellinger_mean"] == pytest.approx((hel0 + hel1) / 2)
    js0, js1 = js_by_hand(p0, q), js_by_hand(p1, q)
    assert h["js_max"] == pytest.approx(js0)
    assert h["js_mean"] == pytest.approx((js0 + js1) / 2)
    assert 0 < js0 < 1
    assert h["effective_classes_min"] == pytest.approx(1.0)
    assert h["effective_classes_mean"] == pytest.approx((1 + 9) / 2)
    assert h["global_effective_classes"] == pytest.approx(10.0)
    assert h["class_counts"] == [[100] + [0] * 9, [0] + [100] * 9]
    assert (h["n_parties"], h["n_samples"], h["n_classes"]) == (2, 1000, 10)
    assert (h["size_min"], h["size_max"], h["size_mean"]) == (100, 900, 500.0)
    assert h["size_std"] == pytest.approx(400.0)  # population std
    assert h["size_cv"] == pytest.approx(0.8)
    assert (h["classes_per_party_min"], h["classes_per_party_max"], h["classes_per_party_mean"]) == (1, 9, 5.0)


def test_identical_parties_are_homogeneous():
    labels = balanced()
    d = {j: np.flatnonzero(np.arange(1000) % 10 == j) for j in range(10)}  # 10 of each class each
    h = partitioners.heterogeneity(labels, d)
    assert h["size_cv"] == 0.0 and h["size_std"] == 0.0
    for key in ("tv_mean", "tv_max", "js_max", "hellinger_max"):
        assert h[key] == pytest.approx(0.0, abs=1e-7)
    assert h["effective_classes_mean"] == pytest.approx(10.0)
    assert h["effective_classes_min"] == pytest.approx(10.0)
    assert h["classes_per_party_min"] == 10


def test_empty_parties_count_in_sizes_only():
    labels = balanced()
    d = {0: np.flatnonzero(labels == 0), 1: np.flatnonzero(labels != 0), 2: np.array([], dtype=np.int64)}
    h = partitioners.heterogeneity(labels, d)
    assert h["n_parties"] == 3 and h["size_min"] == 0
    assert h["tv_mean"] == pytest.approx(0.5)  # the two non-empty parties only
    assert h["classes_per_party_min"] == 0
    assert h["class_counts"][2] == [0] * 10
    only_empty = partitioners.heterogeneity(labels, {0: np.array([], dtype=np.int64)})
    assert only_empty["tv_mean"] is None and only_empty["size_cv"] == 0.0
    json.dumps(only_empty)


def test_num_classes_and_unassigned_samples():
    labels = balanced(10, 5)
    h = partitioners.heterogeneity(labels, {0: np.arange(10), 1: np.arange(10, 15)}, num_classes=8)
    assert h["n_classes"] == 8 and len(h["class_counts"][0]) == 8
    assert h["n_samples"] == 15
    # q is the distribution of the whole label array, not of the assigned samples
    assert h["tv_max"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="num_classes"):
        partitioners.heterogeneity(labels, {0: np.arange(5)}, num_classes=3)
    with pytest.raises(ValueError, match="dataidxs"):
        partitioners.heterogeneity(labels, {0: np.array([50])})


def test_dirichlet_skew_decreases_with_beta():
    labels = np.random.default_rng(0).integers(0, 10, 10_000)
    betas = [0.05, 0.1, 0.5, 1, 5, 100]
    tv = []
    for beta in betas:
        vals = [
            partitioners.heterogeneity(labels, partitioners.partition(labels, "dirichlet", 10, seed=s, beta=beta))[
                "tv_mean"
            ]
            for s in range(5)
        ]
        tv.append(float(np.mean(vals)))
    assert all(a > b for a, b in zip(tv, tv[1:])), tv
    assert tv[-1] < 0.1
    assert tv[0] > 0.5


def test_label_quantity_and_shards_are_skewed_iid_is_not():
    labels = np.random.default_rng(1).integers(0, 10, 5000)
    iid = partitioners.heterogeneity(labels, partitioners.partition(labels, "iid", 10))
    lq = partitioners.heterogeneity(labels, partitioners.partition(labels, "label-quantity", 10, classes_per_party=2))
    assert iid["tv_mean"] < 0.1 and iid["size_cv"] < 1e-9
    assert lq["classes_per_party_max"] == 2 and lq["tv_mean"] > 0.6
    qs = partitioners.heterogeneity(labels, partitioners.partition(labels, "quantity-skew", 10, beta=0.5))
    assert qs["size_cv"] > 0.3 and qs["tv_mean"] < 0.2


def test_format_class_counts_small_and_large():
    t = partitioners.format_class_counts([[5, 0, 1], [2, 3, 4]])
    lines = t.splitlines()
    assert lines[0].split() == ["party", "size", "0", "1", "2"]
    assert lines[2].split() == ["0", "6", "5", "0", "1"]
    assert lines[-1].split() == ["total", "15", "7", "3", "5"]

    big = np.arange(1000 * 30).reshape(1000, 30) % 7
    t = partitioners.format_class_counts(big, max_rows=20)
    lines = t.splitlines()
    assert len(lines) <= 20 + 5
    assert any(line.split()[0] == "..." for line in lines)
    header = lines[0].split()
    assert "..." in header and len(header) <= 2 + 13
    assert header[-1] == "29" and lines[-1].split()[1] == str(int(big.sum()))
    assert lines[-3].split()[0] == "999"
