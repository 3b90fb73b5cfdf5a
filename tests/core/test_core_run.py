"""A tiny federated run end to end through the CLI: every contract file, well-formed."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from fedsim.cli import main

SUMMARY_KEYS = {
    "rounds",
    "test_accuracy",
    "test_loss",
    "test_f1_macro",
    "test_precision_macro",
    "test_recall_macro",
    "train_accuracy",
    "best_test_accuracy",
    "wall_time_s",
    "strategy",
    "partition",
    "heterogeneity",
}
ROW_KEYS = {
    "round",
    "round_time_s",
    "train_loss",
    "clients",
    "failures",
    "bytes_up",
    "bytes_down",
    "bytes_up_total",
    "bytes_down_total",
    "test_accuracy",
    "client_drift_mean",
    "update_cosine_mean",
    "gradient_diversity",
    "update_norm_mean",
}


def test_cli_run_writes_the_contract(tmp_path, tiny, capsys):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny(output={"plots": True})))
    out = tmp_path / "run"
    assert main(["run", str(cfg_path), "federation.rounds=2", "--out", str(out), "--quiet"]) == 0
    for name in (
        "config.yaml",
        "dataidxs.npz",
        "partition.json",
        "metrics.jsonl",
        "clients.jsonl",
        "summary.json",
        "model.pt",
    ):
        assert (out / name).is_file(), name
    assert (out / "checkpoints").is_dir()
    assert (out / "plots" / "accuracy.png").stat().st_size > 0
    assert (out / "plots" / "label_distribution.png").stat().st_size > 0

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    for r in rows:
        assert set(r) >= ROW_KEYS, ROW_KEYS - set(r)
        assert r["clients"] == 4 and r["failures"] == []
        assert r["bytes_down"] > 0 and r["bytes_up"] > 0
        assert 0.0 <= r["test_accuracy"] <= 1.0
    clients = [json.loads(line) for line in (out / "clients.jsonl").read_text().splitlines()]
    assert sorted((c["round"], c["party"]) for c in clients) == [(r, p) for r in (1, 2) for p in range(4)]

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["rounds"] == 2 and summary["strategy"] == "fedavg"
    assert summary["test_accuracy"] == rows[-1]["test_accuracy"]
    assert summary["best_test_accuracy"] == max(r["test_accuracy"] for r in rows)

    part = json.loads((out / "partition.json").read_text())
    counts = np.array(part["class_counts"])
    assert counts.shape == (4, 4) and counts.sum() == 400
    idx = np.load(out / "dataidxs.npz", allow_pickle=False)
    assert "indices" in idx.files

    state = torch.load(out / "model.pt", weights_only=True)
    assert "classifier.weight" in state
    assert yaml.safe_load((out / "config.yaml").read_text())["federation"]["rounds"] == 2
    printed = capsys.readouterr().out
    assert "test_accuracy" in printed


def test_run_learns_something(tmp_path, tiny):
    import fedsim

    r = fedsim.run(tiny(federation={"rounds": 3}), out=tmp_path / "r")
    losses = [h["train_loss"] for h in r.history]
    assert losses[-1] < losses[0]
    assert r.summary["test_accuracy"] > 0.4  # 4 classes: chance is 0.25


def test_existing_out_is_refused_and_untouched(tmp_path, tiny):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny()))
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data:\n  datset: mnist\n")
    proc = subprocess.run([sys.executable, "-m", "fedsim.cli", "run", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.dataset" in lines[0] and "Traceback" not in proc.stderr


def test_tensorboard_stream_per_run(tmp_path, tiny):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import fedsim

    r = fedsim.run(tiny(output={"tensorboard": True}), out=tmp_path / "tb")
    acc = EventAccumulator(str(r.run_dir / "tensorboard"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("test_accuracy")]
    assert steps == [1, 2]
    assert acc.Scalars("test_accuracy")[-1].value == pytest.approx(r.summary["test_accuracy"], abs=1e-6)
    # the run's status as text beside the curves (a diverged run's: "diverged in round N: why")
    (status,) = acc.Tensors("fedsim/status/text_summary")
    assert status.step == 2 and status.tensor_proto.string_val == [b"finished"]
