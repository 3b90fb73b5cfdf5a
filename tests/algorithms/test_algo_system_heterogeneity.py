"""System heterogeneity: epochs drawn per party and round from ``train.epochs: [lo, hi]``, and
stragglers (``federation.straggler_fraction``) that stop after part of their local steps.
Every draw comes from the seed, so two runs with the same seed agree exactly."""

import math

import pytest

import fedsim
from fedsim.rundir.store import read_jsonl

BATCH = 32


def _rows(res) -> list[dict]:
    rows = [r for r in read_jsonl(res.run_dir / "clients.jsonl") if r["stage"] == "train"]
    return sorted(rows, key=lambda r: (r["round"], r["party"]))


def _full_steps(r: dict) -> int:
    # simple-cnn has no BatchNorm: every partial batch counts
    return r["epochs"] * math.ceil(r["num_examples"] / BATCH)


_RUNS: dict = {}  # (name, straggler, seed) -> RunResult, shared by the tests of this module


@pytest.fixture
def hetero(tiny, tmp_path_factory):
    def run(name: str, straggler: float, seed: int = 0):
        key = (name, straggler, seed)
        if key not in _RUNS:
            cfg = tiny(
                seed=seed,
                train={"epochs": [1, 3], "batch_size": BATCH, "lr": 0.05, "momentum": 0.0},
                federation={"rounds": 3, "straggler_fraction": straggler},
            )
            _RUNS[key] = fedsim.run(cfg, out=tmp_path_factory.mktemp("hetero") / name)
        return _RUNS[key]

    return run


def test_epochs_vary_lie_in_range_and_stragglers_stop_early_deterministically(hetero):
    a, b = hetero("a", 0.5), hetero("b", 0.5)
    ra, rb = _rows(a), _rows(b)
    assert len(ra) == 12
    key = lambda r: (r["round"], r["party"], r["epochs"], r["steps"], r["num_examples"])  # noqa: E731
    assert [key(r) for r in ra] == [key(r) for r in rb]
    assert [r["train_loss"] for r in ra] == [r["train_loss"] for r in rb]

    epochs = [r["epochs"] for r in ra]
    assert all(isinstance(e, int) and 1 <= e <= 3 for e in epochs)
    assert len(set(epochs)) > 1
    # the same party gets different epochs in different rounds
    assert any(len({r["epochs"] for r in ra if r["party"] == p}) > 1 for p in range(4))

    stragglers = [r for r in ra if r["steps"] < _full_steps(r)]
    full = [r for r in ra if r["steps"] == _full_steps(r)]
    assert len(stragglers) + len(full) == len(ra)  # nobody runs more than its epochs allow
    assert stragglers and full
    assert all(r["steps"] >= 1 for r in stragglers)
    for h in a.history:
        steps = [r["steps"] for r in ra if r["round"] == h["round"]]
        assert h["local_steps_mean"] == pytest.approx(sum(steps) / len(steps))


def test_without_stragglers_the_same_epochs_run_in_full(hetero):
    s, n = hetero("a", 0.5), hetero("none", 0.0)
    rs, rn = _rows(s), _rows(n)
    # the epoch draw does not depend on the straggler setting
    assert [(r["round"], r["party"], r["epochs"]) for r in rs] == [(r["round"], r["party"], r["epochs"]) for r in rn]
    assert all(r["steps"] == _full_steps(r) for r in rn)
    assert any(x["steps"] < y["steps"] for x, y in zip(rs, rn))


def test_another_seed_draws_other_epochs(hetero):
    a, c = hetero("none", 0.0), hetero("seed1", 0.0, seed=1)
    assert [r["epochs"] for r in _rows(a)] != [r["epochs"] for r in _rows(c)]


def test_a_fixed_epoch_count_is_the_same_for_everyone(tiny, tmp_path):
    res = fedsim.run(tiny(train={"epochs": 2, "batch_size": BATCH}, federation={"rounds": 1}), out=tmp_path / "fixed")
    rows = _rows(res)
    assert [r["epochs"] for r in rows] == [2, 2, 2, 2]
    assert all(r["steps"] == _full_steps(r) for r in rows)
