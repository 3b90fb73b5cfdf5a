"""Weights & Biases offline: the run's files under RUN_DIR/wandb, with the rows of
metrics.jsonl, in its sweep's group."""

from __future__ import annotations

import json
import struct

import pytest

import fedsim
from fedsim.rundir.store import read_jsonl

wandb = pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install 'fedsim[wandb]')")


def read_wandb_records(path):
    """The protobuf records of a ``.wandb`` file (W&B's LevelDB-style log: a 7-byte
    header, 32 KiB blocks, each record a 7-byte header of CRC32, length and type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, records, parts = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the tail of a block too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        parts += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # full, or the last piece of a record
            rec = pb.Record()
            rec.ParseFromString(parts)
            records.append(rec)
            parts = b""
        elif kind == 0 and length == 0:
            break
    return records


def test_wandb_offline_writes_the_runs_files(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = {
        "name": "grp",
        "base": tiny(federation={"rounds": 2}, output={"trackers": ["wandb"]}),
        "grid": {"train.lr": [0.1]},
        "seeds": [0],
    }
    res = fedsim.sweep(spec, out=tmp_path / "sw")
    run_dir = res.sweep_dir / "lr=0.1__seed=0"
    record = json.loads((run_dir / "trackers.json").read_text())["wandb"]
    assert record["status"] == "finished"
    (offline,) = (run_dir / "wandb").glob(f"offline-run-*-{record['ids']['id']}")
    records = read_wandb_records(offline / f"run-{record['ids']['id']}.wandb")
    history = {}
    for rec in records:
        if rec.WhichOneof("record_type") == "history":
            items = {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            history[rec.history.step.num] = items
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert sorted(history) == [row["round"] for row in rows] == [1, 2]
    for row in rows:
        assert history[row["round"]]["test_accuracy"] == pytest.approx(row["test_accuracy"])
        assert history[row["round"]]["train_loss"] == pytest.approx(row["train_loss"])
    config = {}
    for rec in records:
        if rec.WhichOneof("record_type") == "config":
            config.update({i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in rec.config.update})
    assert config["train.lr"] == 0.1
    kinds = {rec.WhichOneof("record_type") for rec in records}
    assert {"summary", "artifact"} <= kinds
    (run,) = [rec.run for rec in records if rec.WhichOneof("record_type") == "run"]
    assert (run.run_group, run.job_type, run.display_name) == ("grp", "grid", "lr=0.1__seed=0")
