"""The shared steps (shuffle by class, cut, owner -> parties) and the laws of the
Dirichlet and label-quantity draws, against NIID-Bench's loop and Dir(beta)."""

from __future__ import annotations

from collections import Counter
from math import comb

import numpy as np
import pytest

import partitioners
from partitioners.dirichlet import draw_class_counts
from partitioners.label_quantity import held_classes
from partitioners.split import by_owner, deal_classes, shuffled_by_class


def _uneven(n_big: int, n_single: int) -> np.ndarray:
    return np.concatenate([np.zeros(n_big, dtype=np.int64), np.arange(1, n_single + 1)])


@pytest.mark.parametrize(
    "labels",
    [
        np.repeat([3, 200], [9000, 1000]),  # absent label values
        np.repeat([0, 10**9, 7 * 10**9], [5, 4000, 1]),  # sparse, large label values
        np.random.default_rng(0).integers(0, 10, 50_000),
        # one big class among tiny ones: once cost 5 GB (a MemoryError) in an older design
        np.repeat([0, 10_000], [49_999, 1]),
        _uneven(25_000, 25_000),  # half one class, half singletons
        np.random.default_rng(1).zipf(1.3, 50_000) - 1,
    ],
)
def test_shuffled_by_class_groups_every_sample_by_ascending_class(labels):
    labels = labels.astype(np.int64)
    ids, sizes = shuffled_by_class(labels, np.random.default_rng(1))
    classes, expected_sizes = np.unique(labels, return_counts=True)
    assert ids.dtype == np.int64 and np.array_equal(sizes, expected_sizes)
    assert np.array_equal(np.sort(ids), np.arange(labels.size))
    assert np.array_equal(labels[ids], np.repeat(classes, sizes))


def test_shuffled_by_class_orders_a_class_uniformly_at_random():
    """Class 1 (ids 0, 2, 4, 6) comes in each of its 24 orders about equally often."""
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 2])
    seen = Counter()
    for s in range(4800):
        ids, sizes = shuffled_by_class(labels, np.random.default_rng(s))
        seen[tuple(ids[3:7].tolist())] += 1  # class 0 has 3 samples, class 1 comes next
    assert len(seen) == 24 and min(seen.values()) > 140 and max(seen.values()) < 260, seen


def test_deal_classes_cuts_each_class_at_the_cumulative_counts():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 6, 2000)
    ids, sizes = shuffled_by_class(labels, rng)
    # random counts per class, leaving some samples of each class out
    counts = np.stack([rng.multinomial(int(n_k) - 5, np.full(9, 1 / 9)) for n_k in sizes])
    d = deal_classes(ids, sizes, counts)
    assert list(d) == list(range(9))
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    for j in range(9):
        assert d[j].dtype == np.int64 and np.all(np.diff(d[j]) > 0)
        assert np.array_equal(np.bincount(labels[d[j]], minlength=6), counts[:, j])
        for k in range(6):  # party j's samples of class k: the j-th run of the class's block
            lo = starts[k] + counts[k, :j].sum()
            assert np.array_equal(d[j][labels[d[j]] == k], np.sort(ids[lo : lo + counts[k, j]]))
    dealt = np.concatenate(list(d.values()))
    assert dealt.size == np.unique(dealt).size == 2000 - 6 * 5


def test_dealt_class_subsets_are_uniform():
    """Party 0 gets 2 of the 4 samples of class 1 (ids 0, 2, 4, 6): all 6 subsets are
    equally likely."""
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 2, 0, 2, 2, 2])
    counts = np.array([[1, 2, 1], [2, 1, 1], [0, 2, 2]])  # classes x parties
    seen = Counter()
    for s in range(1800):
        d = deal_classes(*shuffled_by_class(labels, np.random.default_rng(s)), counts)
        assert [len(d[j]) for j in range(3)] == [3, 5, 4]
        assert np.array_equal(np.sort(np.concatenate(list(d.values()))), np.arange(12))
        seen[tuple(i for i in d[0].tolist() if labels[i] == 1)] += 1
    assert set(seen) == {(0, 2), (0, 4), (0, 6), (2, 4), (2, 6), (4, 6)}
    assert min(seen.values()) > 240 and max(seen.values()) < 360, seen


@pytest.mark.parametrize("n_parties", [3, 300, 70_000])  # owners as uint8, uint16, uint32
def test_by_owner_sorts_and_leaves_out_party_n(n_parties):
    owner = np.random.default_rng(0).integers(0, n_parties + 1, 200_000)
    d = by_owner(owner, n_parties)
    assert list(d) == list(range(n_parties))
    for j in (0, n_parties // 2, n_parties - 1):
        assert d[j].dtype == np.int64 and np.array_equal(d[j], np.flatnonzero(owner == j))
    assert sum(len(a) for a in d.values()) == int((owner < n_parties).sum())


def _niid_bench_counts(sizes: np.ndarray, n_parties: int, proportions_of) -> np.ndarray:
    """NIID-Bench's ``noniid-labeldir`` loop (utils.py ``partition_data``) on the counts:
    ``proportions_of(k, open)`` gives class k's Dir(beta) proportions over all parties."""
    n_total = sizes.sum()
    held = np.zeros(n_parties, dtype=np.int64)
    counts = np.zeros((len(sizes), n_parties), dtype=np.int64)
    for k, n_k in enumerate(sizes):
        proportions = proportions_of(k, held < n_total / n_parties)
        proportions = np.array([p * (m < n_total / n_parties) for p, m in zip(proportions, held)])
        proportions = proportions / proportions.sum()
        cuts = (np.cumsum(proportions) * n_k).astype(int)[:-1]
        counts[k] = [len(part) for part in np.split(np.arange(n_k), cuts)]
        held += counts[k]
    return counts


@pytest.mark.parametrize("beta", [0.3, 0.05])  # Generator.dirichlet from gammas / by stick-breaking
def test_dirichlet_draw_equals_niid_bench_given_the_same_proportions(beta):
    """Same proportions for the parties below the cap -> the same counts as NIID-Bench's
    loop (up to a float rounding of a cut point), however much the full parties drew."""
    sizes = np.array([500, 430, 612, 80, 7, 1000])
    n_parties = 9
    source = np.random.default_rng(0)
    drawn: list[np.ndarray] = []

    class Recorder:  # hands draw_class_counts Dir(beta) proportions and records them
        def dirichlet(self, alpha):
            drawn.append(source.dirichlet(alpha))
            return drawn[-1]

    for _ in range(5):
        drawn.clear()
        counts = draw_class_counts(sizes, n_parties, beta, Recorder())

        def proportions_of(k, is_open):
            p = np.full(n_parties, 5.0)  # a full party's proportion is zeroed whatever it is
            p[is_open] = drawn[k]  # fails if the two loops disagree on the open parties
            return p / p.sum()

        ref = _niid_bench_counts(sizes, n_parties, proportions_of)
        assert np.abs(np.cumsum(counts, axis=1) - np.cumsum(ref, axis=1)).max() <= 1
        assert np.array_equal(counts.sum(axis=1), sizes)
        assert len(drawn) == len(sizes)


def test_dirichlet_first_class_follows_dir_beta():
    """The first class meets no cap: its shares are Dir(beta * 1_n), so each party's share
    has mean 1/n and variance (1/n)(1 - 1/n) / (n beta + 1)."""
    n, beta, draws = 4, 0.5, 3000
    rng = np.random.default_rng(3)
    shares = np.stack([draw_class_counts(np.array([100_000]), n, beta, rng)[0] for _ in range(draws)]) / 100_000
    var = (1 / n) * (1 - 1 / n) / (n * beta + 1)  # 0.0625
    assert np.abs(shares.mean(axis=0) - 1 / n).max() < 4.5 * np.sqrt(var / draws)  # ~0.02
    assert np.abs(shares.var(axis=0) / var - 1).max() < 0.15


def test_dirichlet_draw_has_niid_bench_law_with_the_cap_in_play():
    """Over many draws with the cap binding, the party sizes (sorted) and the classes
    per party have the same means as NIID-Bench's loop with its own proportions."""
    sizes, n_parties, beta, draws = np.array([200, 200, 200, 200, 200]), 10, 0.5, 2000
    rng = np.random.default_rng(11)
    ours = [draw_class_counts(sizes, n_parties, beta, rng) for _ in range(draws)]
    ref_rng = np.random.default_rng(12)
    ref = [
        _niid_bench_counts(sizes, n_parties, lambda k, _: ref_rng.dirichlet(np.full(n_parties, beta)))
        for _ in range(draws)
    ]
    for stat in (lambda c: np.sort(c.sum(axis=0)), lambda c: np.array([(c > 0).sum(axis=0).mean()])):
        a, b = np.array([stat(c) for c in ours]), np.array([stat(c) for c in ref])
        se = np.sqrt(a.var(axis=0) / draws + b.var(axis=0) / draws)
        assert np.all(np.abs(a.mean(axis=0) - b.mean(axis=0)) < 4.5 * se + 1e-9)
    # the cap is in play: a party stops at N/n = 100 or soon after in most draws
    assert np.mean([c.sum(axis=0).max() < 200 for c in ours]) > 0.5


def test_label_quantity_other_classes_are_uniform():
    """Party i holds class i mod K and c - 1 of the K - 1 others, each subset equally likely."""
    n_parties, k, c, draws = 5, 5, 3, 3000
    rng = np.random.default_rng(5)
    seen = [Counter() for _ in range(n_parties)]
    for _ in range(draws):
        holds = held_classes(n_parties, k, c, rng)
        assert np.array_equal(holds.sum(axis=1), [c] * n_parties)
        assert holds[np.arange(n_parties), np.arange(n_parties) % k].all()
        for i in range(n_parties):
            seen[i][tuple(np.flatnonzero(holds[i]).tolist())] += 1
    expected = draws / comb(k - 1, c - 1)  # 500 for each of the 6 subsets
    for i in range(n_parties):
        assert len(seen[i]) == comb(k - 1, c - 1)
        assert all(abs(v - expected) < 5 * np.sqrt(expected) for v in seen[i].values()), seen[i]


def test_label_quantity_splits_each_class_like_array_split():
    """A class with n_k samples and h holders: np.array_split among the holders in party
    order, so the first n_k mod h holders get n_k // h + 1 samples, the others n_k // h."""
    sizes = [10, 11, 7, 13]
    labels = np.repeat(np.arange(4), sizes)
    for seed in range(10):
        d = partitioners.partition(labels, "label-quantity", 6, seed=seed, classes_per_party=2)
        counts = np.stack([np.bincount(labels[d[j]], minlength=4) for j in range(6)])
        assert np.array_equal(counts.sum(axis=0), sizes)  # 6 parties hold all 4 classes
        for k, n_k in enumerate(sizes):
            holders = np.flatnonzero(counts[:, k])
            expected = [len(part) for part in np.array_split(np.arange(n_k), len(holders))]
            assert counts[holders, k].tolist() == expected
