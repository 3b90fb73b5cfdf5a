"""Client failures: raised, non-finite and timed-out clients are left out and recorded."""

import json
import math

import pytest
import torch

import fedsim
from fedsim.errors import RunAborted
from fedsim.util.seeding import uniform


def _expected_faults(seed, rounds, sampled_by_round, rate):
    """The documented fault draw: uniform(seed, "fault", round, party) < rate fails."""
    out = {}
    for r in range(1, rounds + 1):
        for p in sampled_by_round[r]:
            if uniform(seed, "fault", r, p) < rate:
                out[(r, p)] = "raise" if uniform(seed, "fault-kind", r, p) < 0.5 else "nan"
    return out


def test_fault_rate_run_completes_counts_failures_and_never_aggregates_nan(tmp_path, tiny):
    cfg = tiny(
        federation={"rounds": 6, "max_failure_fraction": 1.0}, engine={"fault_rate": 0.3}, partition={"n_parties": 6}
    )
    r = fedsim.run(cfg, out=tmp_path / "r")
    rows = r.history
    clients = [json.loads(line) for line in (r.run_dir / "clients.jsonl").read_text().splitlines()]
    sampled = {row["round"]: list(range(6)) for row in rows}
    expected = _expected_faults(0, 6, sampled, 0.3)
    assert expected, "the seed must inject some faults for this test to mean anything"
    failed = {(c["round"], c["party"]) for c in clients if c["status"] == "failed"}
    assert failed == set(expected)
    for row in rows:
        got = {f["party"] for f in row["failures"]}
        assert got == {p for (rr, p) in expected if rr == row["round"]}
        assert row["clients"] == 6 - len(got)
        assert math.isfinite(row["test_loss"]) and math.isfinite(row["train_loss"])
    reasons = {f["reason"].split(":")[0] for row in rows for f in row["failures"]}
    assert reasons <= {"InjectedFault", "non-finite train_loss, train_objective, weights (injected)"}
    assert r.summary["status"] == "finished"  # injected non-finite replies are faults, not divergence
    assert r.summary["failures_total"] == len(expected)
    w = torch.load(r.run_dir / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in w.values() if v.is_floating_point())


def test_too_many_failures_stop_with_a_resumable_checkpoint(tmp_path, tiny):
    cfg = tiny(federation={"rounds": 3, "max_failure_fraction": 0.1}, engine={"fault_rate": 0.5})
    with pytest.raises(RunAborted, match="max_failure_fraction"):
        fedsim.run(cfg, out=tmp_path / "r")
    assert (tmp_path / "r" / "checkpoints").is_dir()
    # a higher tolerance does not change the run's identity: resume finishes it
    cfg["federation"]["max_failure_fraction"] = 1.0
    done = fedsim.run(cfg, out=tmp_path / "r", resume=True)
    assert done.summary["rounds"] == 3


def test_client_timeout_is_recorded(tmp_path, tiny):
    cfg = tiny(federation={"rounds": 1, "max_failure_fraction": 1.0}, engine={"client_timeout": 1e-6})
    r = fedsim.run(cfg, out=tmp_path / "r")
    row = r.history[0]
    assert row["clients"] == 0 and len(row["failures"]) == 4
    assert all(f["reason"].startswith("timeout") for f in row["failures"])


def test_clients_that_all_go_non_finite_end_the_run_as_diverged(tmp_path, tiny):
    # an absurd learning rate makes every client's training non-finite: the cohort is
    # screened out, and since the failures are non-finite training (not faults) the run
    # ends as diverged (summary written, model.pt the last finite global model)
    cfg = tiny(train={"lr": 1e30, "momentum": 0.0}, federation={"rounds": 2, "max_failure_fraction": 0.5})
    r = fedsim.run(cfg, out=tmp_path / "r")
    assert r.summary["status"] == "diverged" and r.summary["diverged_round"] == 1
    assert "non-finite" in r.summary["divergence_reason"]
    row = r.history[-1]
    assert row["round"] == 1 and len(row["failures"]) == 4 and row["diverged"]


def test_non_finite_global_model_ends_the_run_as_diverged(tmp_path, tiny):
    # every client reply is finite, but FedAdam's server step overflows float32: the
    # aggregate is non-finite (NonFiniteModel), which is divergence, not a client failure
    cfg = tiny(strategy={"name": "fedadam", "eta": 1e300}, federation={"rounds": 3})
    r = fedsim.run(cfg, out=tmp_path / "r")
    assert r.summary["status"] == "diverged" and r.summary["diverged_round"] == 1
    assert "NaN or inf" in r.summary["divergence_reason"]
    assert r.history[-1]["failures"] == []
    w = torch.load(r.run_dir / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in w.values() if v.is_floating_point())
