"""Exact repeats on CPU: the same config and seed give the same bytes, for every strategy."""

import json

import pytest
import torch

import fedsim
import strategies

TIMING = ("round_time_s", "time_s", "train_time_s", "wall_time_s")


def _rows(path):
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        out.append({k: v for k, v in row.items() if not any(t in k for t in TIMING)})
    return out


def _cfg(tiny, needs, name, seed=0):
    return tiny(
        seed=seed,
        **needs(
            name,
            strategy={"name": name, **({"mu": 0.5} if name == "moon" else {})},
            federation={"rounds": 2, "fraction_fit": 0.75},
        ),
    )


# a representative set in the default run (plain, server state, client state, personal,
# MOON's model); every algorithm with python -m pytest -m slow
_DEFAULT_RUN = {"fedavg", "scaffold", "moon", "fedrep", "ditto", "pfedme", "fedbn"}


@pytest.mark.parametrize(
    "name", [n if n in _DEFAULT_RUN else pytest.param(n, marks=pytest.mark.slow) for n in strategies.available()]
)
def test_two_runs_are_identical(tmp_path, tiny, needs, name):
    a = fedsim.run(_cfg(tiny, needs, name), out=tmp_path / "a")
    b = fedsim.run(_cfg(tiny, needs, name), out=tmp_path / "b")
    assert (a.run_dir / "model.pt").read_bytes() == (b.run_dir / "model.pt").read_bytes()
    assert _rows(a.run_dir / "metrics.jsonl") == _rows(b.run_dir / "metrics.jsonl")
    assert _rows(a.run_dir / "clients.jsonl") == _rows(b.run_dir / "clients.jsonl")
    assert (a.run_dir / "dataidxs.npz").read_bytes() == (b.run_dir / "dataidxs.npz").read_bytes()


def test_another_seed_gives_other_results(tmp_path, tiny, needs):
    a = fedsim.run(_cfg(tiny, needs, "fedavg", seed=0), out=tmp_path / "a")
    b = fedsim.run(_cfg(tiny, needs, "fedavg", seed=1), out=tmp_path / "b")
    wa = torch.load(a.run_dir / "model.pt", weights_only=True)
    wb = torch.load(b.run_dir / "model.pt", weights_only=True)
    assert not torch.equal(wa["classifier.weight"], wb["classifier.weight"])
    assert _rows(a.run_dir / "metrics.jsonl") != _rows(b.run_dir / "metrics.jsonl")
