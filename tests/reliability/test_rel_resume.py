"""A run killed with SIGKILL mid-run and resumed ends exactly like an uninterrupted one."""

import json

import pytest
import torch

import fedsim
from fedsim.rundir.checkpoint import checkpoint_dirs
from fedsim.rundir.store import RunStore

TIMING = ("round_time_s", "time_s", "train_time_s", "wall_time_s")


def _rows(path):
    return [
        {k: v for k, v in json.loads(line).items() if not any(t in k for t in TIMING)}
        for line in path.read_text().splitlines()
    ]


def _config(tiny, name, needs):
    return tiny(
        **needs(
            name,
            strategy={"name": name, **({"mu": 1.0} if name == "moon" else {})},
            federation={"rounds": 5, "fraction_fit": 0.75},
            # enough work per round that the kill lands inside a round, not between runs
            data={"n_train": 1200},
            # a personalised algorithm: its personal models are client state, evaluated
            # every round on each party's own test data (parties.jsonl)
            **({"eval": {"local_test": "split", "finetune_epochs": 1}} if name == "ditto" else {}),
        )
    )


@pytest.mark.parametrize(
    "name",
    # Ditto in the default run (FedAvg's global update plus personal models in the
    # client-state store and parties.jsonl); the others are the slow variants
    [
        pytest.param("fedavg", marks=pytest.mark.slow),
        "ditto",
        pytest.param("scaffold", marks=pytest.mark.slow),
        pytest.param("moon", marks=pytest.mark.slow),
    ],
)
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny, needs, name, kill_and_resume):
    cfg = _config(tiny, name, needs)
    ref = fedsim.run(cfg, out=tmp_path / "ref")

    def something_to_resume_from(out):
        assert checkpoint_dirs(RunStore(out))

    out = kill_and_resume(cfg, tmp_path, 2, something_to_resume_from)
    a = torch.load(ref.run_dir / "model.pt", weights_only=True)
    b = torch.load(out / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(ref.run_dir / "metrics.jsonl") == _rows(out / "metrics.jsonl")
    assert _rows(ref.run_dir / "clients.jsonl") == _rows(out / "clients.jsonl")
    if name == "ditto":
        assert len(_rows(out / "parties.jsonl")) == 5 * 4 * 3  # rounds x parties x modes
        assert _rows(ref.run_dir / "parties.jsonl") == _rows(out / "parties.jsonl")


def test_resume_of_a_finished_run_is_a_noop(tmp_path, tiny):
    cfg = tiny()
    r = fedsim.run(cfg, out=tmp_path / "r")
    stamp = {p: p.stat().st_mtime_ns for p in r.run_dir.rglob("*") if p.is_file()}
    r2 = fedsim.run(cfg, out=tmp_path / "r", resume=True)
    assert r2.summary == r.summary
    assert {p: p.stat().st_mtime_ns for p in r.run_dir.rglob("*") if p.is_file()} == stamp


def test_checkpoints_keep_the_last_two_and_hold_the_server_state(tmp_path, tiny):
    r = fedsim.run(tiny(strategy={"name": "scaffold"}, federation={"rounds": 4}), out=tmp_path / "r")
    dirs = checkpoint_dirs(RunStore(r.run_dir))
    assert [d.name for d in dirs] == ["round_000003", "round_000004"]
    state = torch.load(dirs[-1] / "state.pt", weights_only=True)
    assert state["round"] == 4 and state["strategy"]["c"]  # SCAFFOLD's server control variate
    assert {"torch", "python", "numpy_key"} <= set(state["rng"])
    assert len(json.loads(state["history"])) == 4
    assert sorted(p.name for p in (dirs[-1] / "client_state").iterdir()) == [f"party_{i:06d}.pt" for i in range(4)]


def test_checkpoint_every_k(tmp_path, tiny):
    r = fedsim.run(
        tiny(federation={"rounds": 5}, output={"checkpoint_every": 2, "keep_checkpoints": 5}), out=tmp_path / "r"
    )
    assert [d.name for d in checkpoint_dirs(RunStore(r.run_dir))] == [f"round_00000{i}" for i in (0, 2, 4, 5)]
