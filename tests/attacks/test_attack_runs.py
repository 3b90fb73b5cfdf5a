"""Attacks and defences in whole runs: the reduction to the clean run, the records,
the batched engine, exact repeats and resumes."""

from __future__ import annotations

import json

import pytest
import torch

import fedsim
from fedsim.inputs.adversary import AttackEvaluator
from fedsim.inputs.run_inputs import Experiment, RunSettings
from fedsim.models import build_model

TIMING = ("round_time_s", "time_s", "train_time_s", "wall_time_s")


def _rows(path, drop=()):
    return [
        {k: v for k, v in json.loads(line).items() if not any(t in k for t in TIMING) and k not in drop}
        for line in path.read_text().splitlines()
    ]


def _weights(res):
    return torch.load(res.run_dir / "model.pt", weights_only=True)


def test_sign_flip_with_fraction_zero_equals_the_clean_run_exactly(tmp_path, tiny):
    clean = fedsim.run(tiny(), out=tmp_path / "clean")
    zero = fedsim.run(tiny(attack={"name": "sign-flip", "fraction": 0.0}), out=tmp_path / "zero")
    assert (clean.run_dir / "model.pt").read_bytes() == (zero.run_dir / "model.pt").read_bytes()
    assert [r["malicious_clients"] for r in zero.history] == [0, 0]
    assert _rows(clean.run_dir / "metrics.jsonl") == _rows(zero.run_dir / "metrics.jsonl", drop=("malicious_clients",))
    assert _rows(clean.run_dir / "clients.jsonl") == _rows(zero.run_dir / "clients.jsonl")
    assert zero.summary["malicious_parties"] == [] and zero.summary["attack"] == "sign-flip"
    # the clean run's records and hash are what they were before attacks existed
    assert "attack" not in clean.summary and "malicious_clients" not in clean.history[0]


def test_sign_flip_marks_the_malicious_parties_and_changes_the_run(tmp_path, tiny):
    clean = fedsim.run(tiny(), out=tmp_path / "clean")
    res = fedsim.run(tiny(attack={"name": "sign-flip", "parties": [1, 3]}), out=tmp_path / "flip")
    rows = [json.loads(line) for line in (res.run_dir / "clients.jsonl").read_text().splitlines()]
    assert {r["party"] for r in rows if r.get("malicious")} == {1, 3}
    assert all(r.get("malicious") is True for r in rows if r["party"] in (1, 3))
    assert not any("malicious" in r for r in rows if r["party"] not in (1, 3))
    assert [r["malicious_clients"] for r in res.history] == [2, 2]
    assert res.summary["malicious_parties"] == [1, 3]
    wc, wf = _weights(clean), _weights(res)
    assert any(not torch.equal(wc[k], wf[k]) for k in wc)


def test_a_fraction_draws_the_malicious_parties_from_the_seed(tmp_path, tiny):
    a = fedsim.run(tiny(attack={"name": "sign-flip", "fraction": 0.5}), out=tmp_path / "a")
    b = fedsim.run(tiny(seed=3, attack={"name": "sign-flip", "fraction": 0.5}), out=tmp_path / "b")
    assert len(a.summary["malicious_parties"]) == 2 and len(b.summary["malicious_parties"]) == 2
    assert (
        a.summary["malicious_parties"]
        == fedsim.run(tiny(attack={"name": "ipm", "fraction": 0.5}), out=tmp_path / "c").summary["malicious_parties"]
    )


def test_the_backdoor_success_rate_is_recorded_each_round_and_matches_the_final_model(tmp_path, tiny):
    cfg = tiny(attack={"name": "backdoor", "parties": [0, 1], "poison_fraction": 0.8, "target_class": 1})
    res = fedsim.run(cfg, out=tmp_path / "bd")
    rates = [r["attack_success_rate"] for r in res.history]
    assert len(rates) == 2 and all(0.0 <= x <= 1.0 for x in rates)
    assert res.summary["attack_success_rate"] == rates[-1]
    # recomputed from model.pt: the share of triggered test images of classes 0, 2, 3 predicted 1
    exp = Experiment(RunSettings(res.config, str(res.run_dir)))
    b = exp.bundle
    model = build_model(res.config.model, b.input_shape, b.num_classes)
    model.load_state_dict(_weights(res))
    assert AttackEvaluator(res.config, b, torch.device("cpu"))(model)["attack_success_rate"] == rates[-1]


def test_a_label_flip_run_records_its_success_rate(tmp_path, tiny):
    res = fedsim.run(
        tiny(attack={"name": "label-flip", "parties": [0, 1, 2], "source_class": 1, "target_class": 2}),
        out=tmp_path / "lf",
    )
    assert all(0.0 <= r["attack_success_rate"] <= 1.0 for r in res.history)


@pytest.mark.parametrize(
    "attack",
    [
        {"name": "label-flip", "parties": [0, 2], "source_class": 1, "target_class": 2},
        {"name": "backdoor", "parties": [1], "target_class": 0},
    ],
    ids=["label-flip", "backdoor"],
)
def test_the_batched_engine_trains_on_the_poisoned_data(tmp_path, tiny, attack):
    def run(mode):
        cfg = tiny(attack=attack, engine={"batch_clients": mode}, train={"epochs": 1, "momentum": 0.0})
        return fedsim.run(cfg, out=tmp_path / mode)

    seq, bat = run("off"), run("on")
    ws, wb = _weights(seq), _weights(bat)
    for k in ws:
        torch.testing.assert_close(wb[k], ws[k], rtol=0, atol=1e-5)
    clean = _weights(
        fedsim.run(tiny(engine={"batch_clients": "on"}, train={"epochs": 1, "momentum": 0.0}), out=tmp_path / "clean")
    )
    assert any(not torch.allclose(clean[k], wb[k]) for k in wb)


@pytest.mark.parametrize(
    "sections",
    [
        {"attack": {"name": "gaussian", "fraction": 0.5}, "defence": {"name": "centred-clip"}},
        {
            "attack": {"name": "backdoor", "parties": [2], "boost": 3.0, "target_class": 0},
            "defence": {"name": "norm-bound"},
        },
    ],
    ids=["gaussian-centred-clip", "backdoor-norm-bound"],
)
def test_repeats_and_resumes_exactly(tmp_path, tiny, sections):
    full = fedsim.run(tiny(federation={"rounds": 3}, **sections), out=tmp_path / "full")
    again = fedsim.run(tiny(federation={"rounds": 3}, **sections), out=tmp_path / "again")
    assert (full.run_dir / "model.pt").read_bytes() == (again.run_dir / "model.pt").read_bytes()
    # 1 round, then trained on to 3 from its checkpoint (the centre of centred clipping with it)
    fedsim.run(tiny(federation={"rounds": 1}, **sections), out=tmp_path / "part")
    resumed = fedsim.run(tiny(federation={"rounds": 3}, **sections), out=tmp_path / "part", resume=True)
    assert (full.run_dir / "model.pt").read_bytes() == (resumed.run_dir / "model.pt").read_bytes()
    assert _rows(full.run_dir / "metrics.jsonl") == _rows(resumed.run_dir / "metrics.jsonl")


def test_defences_record_what_they_did(tmp_path, tiny):
    res = fedsim.run(
        tiny(attack={"name": "scale", "parties": [0]}, defence={"name": "norm-bound", "norm_bound": 0.5}),
        out=tmp_path / "nb",
    )
    assert all(r["defence_norm_bound"] == 0.5 and r["defence_clipped"] >= 1 for r in res.history)
    assert res.summary["defence"] == "norm-bound"
