"""The correctness faults found in review, each pinned by a test that failed before its fix."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import fedsim
from fedsim.errors import ConfigError
from fedsim.rundir.store import load_tensors
from fedsim.sweeps import Factor, Setting, make_table
from fedsim.util.seeding import uniform

RESNET = dict(
    model={"name": "resnet18"},
    data={"image_shape": [3, 8, 8], "n_train": 64, "n_test": 32},
    partition={"scheme": "iid", "n_parties": 2, "min_size": 5},
    train={"epochs": 1, "batch_size": 16, "lr": 0.05, "momentum": 0.0},
    federation={"rounds": 2},
    eval={"train_sample": 0, "model_heterogeneity": False},
    output={"plots": False, "keep_checkpoints": 3},
)
_REFERENCE: dict = {}


def _ckpt_arrays(run_dir, rnd):
    return torch.load(run_dir / "checkpoints" / f"round_{rnd:06d}" / "state.pt", weights_only=True)["arrays"]


def _is_buffer(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


@pytest.mark.parametrize(
    "name", ["fedadam", *(pytest.param(n, marks=pytest.mark.slow) for n in ("fedavgm", "fedyogi", "fedadagrad"))]
)
def test_server_optimisers_leave_batchnorm_buffers_to_fedavg(tmp_path_factory, tiny, name):
    if "fedavg" not in _REFERENCE:  # one FedAvg run for the four optimisers
        _REFERENCE["fedavg"] = fedsim.run(
            tiny(strategy={"name": "fedavg"}, **RESNET), out=tmp_path_factory.mktemp("fedavg") / "r"
        )
    avg = _REFERENCE["fedavg"]
    opt = fedsim.run(tiny(strategy={"name": name}, **RESNET), out=tmp_path_factory.mktemp(name) / "r")
    for row in opt.history:
        assert row["test_loss"] is not None and row["test_loss"] < 50, row["test_loss"]
    final = torch.load(opt.run_dir / "model.pt", weights_only=True)
    assert all(bool((v >= 0).all()) for k, v in final.items() if k.endswith("running_var"))
    # round 1 starts from the same model on both runs, so the clients return the same
    # states: the buffers are their FedAvg average, the parameters took a server step
    a, b = _ckpt_arrays(opt.run_dir, 1), _ckpt_arrays(avg.run_dir, 1)
    buffers = [k for k in a if _is_buffer(k)]
    assert buffers and all(torch.equal(a[k], b[k]) for k in buffers)
    assert any(not torch.equal(a[k], b[k]) for k in a if not _is_buffer(k))


def _nan_faults(seed, rounds, parties, rate):
    """(round, party) of the injected non-finite replies: the documented fault draw."""
    return [
        (r, p)
        for r in range(1, rounds + 1)
        for p in parties
        if uniform(seed, "fault", r, p) < rate and uniform(seed, "fault-kind", r, p) >= 0.5
    ]


@pytest.mark.parametrize("name", ["scaffold", "feddyn"])
def test_a_dropped_reply_leaves_the_partys_state_unchanged(tmp_path, tiny, name):
    seed, rate = 1, 0.4  # non-finite replies of parties 2 (round 2) and 1 (round 3), both trained in round 1
    cfg = tiny(
        seed=seed,
        strategy={"name": name},
        federation={"rounds": 3, "max_failure_fraction": 1.0},
        engine={"fault_rate": rate},
        output={"plots": False, "keep_checkpoints": 4},
    )
    faults = [(r, p) for r, p in _nan_faults(seed, 3, range(4), rate) if r > 1]
    assert faults, "the seed must inject a non-finite reply after round 1"
    res = fedsim.run(cfg, out=tmp_path / "r")
    for r, p in faults:
        before = res.run_dir / "checkpoints" / f"round_{r - 1:06d}" / "client_state" / f"party_{p:06d}.pt"
        after = res.run_dir / "checkpoints" / f"round_{r:06d}" / "client_state" / f"party_{p:06d}.pt"
        assert before.exists() == after.exists()
        if before.exists():
            a, b = (load_tensors(f) for f in (before, after))
            assert all(torch.equal(a[k], b[k]) for k in a)
            assert all(torch.isfinite(v).all() for v in b.values())
    assert not (res.run_dir / "client_state" / "pending").exists()


def test_scaffold_refuses_adam(tiny):
    with pytest.raises(ConfigError, match="scaffold' needs train.optimizer: sgd"):
        fedsim.load_config(tiny(strategy={"name": "scaffold"}, train={"optimizer": "adam"}))


def test_a_run_whose_loss_explodes_ends_as_diverged(tmp_path, tiny, caplog):
    # a learning rate far too large for this model: the local loss grows by orders of magnitude
    cfg = tiny(train={"lr": 3.0, "momentum": 0.9}, federation={"rounds": 6, "max_failure_fraction": 1.0})
    with caplog.at_level(logging.WARNING, logger="fedsim.server.app"):
        res = fedsim.run(cfg, out=tmp_path / "stop")
    s = res.summary
    assert s["status"] == "diverged" and s["diverged_round"] is not None and s["rounds"] == s["diverged_round"] < 6
    assert [m for m in caplog.messages if f"run diverged in round {s['diverged_round']}" in m]
    assert res.history[-1]["diverged"] == s["divergence_reason"]
    assert json.loads((res.run_dir / "summary.json").read_text())["status"] == "diverged"
    # resuming a diverged run does nothing: it has ended
    again = fedsim.run(cfg, out=tmp_path / "stop", resume=True)
    assert again.summary == res.summary


def test_on_divergence_continue_trains_on_and_keeps_the_mark(tmp_path, tiny):
    # any rise of the loss above round 1's counts here (factor 1): the run goes on
    cfg = tiny(federation={"rounds": 3, "divergence_factor": 1e-9, "on_divergence": "continue"})
    res = fedsim.run(cfg, out=tmp_path / "go-on")
    assert res.summary["rounds"] == 3
    assert res.summary["status"] == "diverged" and res.summary["diverged_round"] == 2
    assert "above 1e-09 x round 1's" in res.summary["divergence_reason"]


def test_the_sweep_table_marks_diverged_runs():
    factors = [Factor("strategy.name", "strategy", (Setting("fedavg", {}), Setting("scaffold", {})))]
    rows = [
        {"strategy.name": "fedavg", "status": "finished", "test_accuracy": 0.8, "diverged_round": None},
        {"strategy.name": "scaffold", "status": "finished", "test_accuracy": 0.1, "diverged_round": 7},
    ]
    table = make_table(rows, factors)
    line = [ln for ln in table.splitlines() if ln.startswith("| all")][0]
    assert "**80.00**" in line and "10.00 † (1 diverged)" in line
    assert "† runs whose training diverged" in table
