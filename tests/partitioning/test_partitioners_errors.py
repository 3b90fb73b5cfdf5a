"""Bad input: a one-line ValueError naming the parameter (and what is allowed)."""

from __future__ import annotations

import numpy as np
import pytest

import partitioners

LAB = np.random.default_rng(0).integers(0, 5, 100)
P = partitioners.partition

CASES = [
    # (description, call, text the message must contain)
    ("float labels", lambda: P(LAB.astype(float), "iid", 2), "labels"),
    ("2-D labels", lambda: P(LAB.reshape(10, 10), "iid", 2), "labels"),
    ("empty labels", lambda: P(np.array([], dtype=np.int64), "iid", 1), "labels"),
    ("bool labels", lambda: P(LAB > 2, "iid", 2), "labels"),
    ("negative labels", lambda: P(LAB - 1, "iid", 2), "labels"),
    ("n_parties 0", lambda: P(LAB, "iid", 0), "n_parties"),
    ("n_parties > N", lambda: P(LAB, "iid", 101), "n_parties"),
    ("n_parties float", lambda: P(LAB, "iid", 2.5), "n_parties"),
    ("seed negative", lambda: P(LAB, "iid", 2, seed=-1), "seed"),
    ("beta 0", lambda: P(LAB, "dirichlet", 2, beta=0), "beta"),
    ("beta negative", lambda: P(LAB, "quantity-skew", 2, beta=-1.0), "beta"),
    ("beta nan", lambda: P(LAB, "dirichlet", 2, beta=float("nan")), "beta"),
    ("beta str", lambda: P(LAB, "dirichlet", 2, beta="x"), "beta"),
    ("min_size negative", lambda: P(LAB, "dirichlet", 2, beta=1, min_size=-1), "min_size"),
    ("n * min_size > N", lambda: P(LAB, "dirichlet", 11, beta=1, min_size=10), "min_size"),
    ("quantity-skew n * min_size > N", lambda: P(LAB, "quantity-skew", 20, beta=1, min_size=6), "min_size"),
    ("max_redraws 0", lambda: P(LAB, "dirichlet", 2, beta=1, max_redraws=0), "max_redraws"),
    ("classes_per_party 0", lambda: P(LAB, "label-quantity", 2, classes_per_party=0), "classes_per_party"),
    ("classes_per_party > K", lambda: P(LAB, "label-quantity", 2, classes_per_party=6), "classes_per_party"),
    ("shards_per_party 0", lambda: P(LAB, "shards", 2, shards_per_party=0), "shards_per_party"),
    ("n * shards > N", lambda: P(LAB, "shards", 30, shards_per_party=4), "shards_per_party"),
    ("groups wrong length", lambda: P(LAB, "natural", 2, groups=np.arange(99)), "groups"),
    ("groups 2-D", lambda: P(LAB, "natural", 2, groups=np.zeros((100, 2))), "groups"),
    ("fewer groups than parties", lambda: P(LAB, "natural", 5, groups=np.arange(100) % 3), "n_parties"),
    (
        "unknown scheme",
        lambda: P(LAB, "pathological", 2),
        "dirichlet, flwr, iid, label-quantity, natural, quantity-skew, shards",
    ),
    ("unknown parameter", lambda: P(LAB, "iid", 2, beta=0.5), "beta"),
    (
        "unknown parameter named with accepted",
        lambda: P(LAB, "dirichlet", 2, beta=1, alpha=2),
        "accepts: beta, min_size, max_redraws",
    ),
    ("missing required", lambda: P(LAB, "natural", 2), "groups"),
    ("missing beta", lambda: P(LAB, "dirichlet", 2), "beta"),
    ("scheme_params unknown", lambda: partitioners.scheme_params("nope"), "iid"),
    ("noise sigma negative", lambda: partitioners.noise_levels(-1.0, 3), "sigma"),
    ("noise n_parties 0", lambda: partitioners.noise_levels(1.0, 0), "n_parties"),
]


@pytest.mark.parametrize("desc,call,text", CASES, ids=[c[0] for c in CASES])
def test_bad_input(desc, call, text):
    with pytest.raises(ValueError) as e:
        call()
    msg = str(e.value)
    assert text in msg, msg
    assert "\n" not in msg


def test_impossible_min_size_is_bounded_and_explained():
    labels = np.random.default_rng(0).integers(0, 10, 5000)
    with pytest.raises(ValueError) as e:
        P(labels, "dirichlet", 100, beta=0.01, min_size=10, max_redraws=50)
    msg = str(e.value)
    for word in ("min_size=10", "50 draws", "beta=0.01", "100 parties", "5000 samples", "partition.beta"):
        assert word in msg, msg
    with pytest.raises(ValueError, match="quantity-skew: no split"):
        P(labels, "quantity-skew", 100, beta=0.01, min_size=10, max_redraws=50)


# MNIST's 10,000 test labels, class by class: a Dirichlet draw's acceptance depends on the
# class sizes only, so these labels need as many draws as MNIST's own
MNIST_T10K_CLASS_SIZES = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_a_setting_niid_bench_completes_gets_a_split(caplog):
    # NIID-Bench's settings (100 parties, beta 0.1, min_size 10) on MNIST's test labels:
    # seed 1 needs 3,960 draws (the old bound of 1,000 gave up); a line says it is drawing on
    labels = np.repeat(np.arange(10), MNIST_T10K_CLASS_SIZES)
    with caplog.at_level("WARNING", logger="partitioners"):
        parts = P(labels, "dirichlet", 100, seed=1, beta=0.1, min_size=10)
    assert min(len(v) for v in parts.values()) >= 10
    assert sum(len(v) for v in parts.values()) == 10_000
    with pytest.raises(ValueError, match="after 1000 draws"):
        P(labels, "dirichlet", 100, seed=1, beta=0.1, min_size=10, max_redraws=1000)
    from partitioners._validate import Redraws

    # the progress lines: once after the time limit, then the draw count of the split
    draws = Redraws("dirichlet", 10_000, 10, report_after=0.0)
    with caplog.at_level("WARNING", logger="partitioners"):
        caplog.clear()
        for i in draws:
            if i == 999:
                draws.found(i)
                break
    assert [r.getMessage() for r in caplog.records] == [
        "partition dirichlet: 255 draws so far without every party >= min_size=10; drawing on "
        "(at most partition.max_redraws=10000)",
        "partition dirichlet: split found after 1000 draws (0.0 s)",
    ]
