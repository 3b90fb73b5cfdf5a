"""The clock in whole runs: the defaults change nothing, an infinite deadline and no
over-selection are no deadline and none, the records follow FedScale's formula, an
offline party is never sampled, bad traces are one line and exit 2, and a resumed run
continues the clock exactly."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

import fedsim
from fedsim.cli import main
from fedsim.config.load import load_config
from fedsim.errors import ConfigError
from fedsim.schema.identity import config_hash, identity
from fedsim.system.sources import load_profiles

TIMING = ("round_time_s", "time_s", "train_time_s", "wall_time_s")
SYNTHETIC = {"source": "synthetic"}
STRAGGLING = {"rounds": 3, "fraction_fit": 0.75, "straggler_fraction": 0.5}


def _rows(path: Path, drop_sim: bool = False) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        {k: v for k, v in r.items() if not any(t in k for t in TIMING) and not (drop_sim and k.startswith("sim_"))}
        for r in rows
        if not (drop_sim and r.get("status") in ("late", "offline", "surplus"))
    ]


def _cfg(tiny, system=None, **sections):
    base = {"federation": {"rounds": 3, "fraction_fit": 0.75}, "partition": {"n_parties": 4}}
    base.update(sections)
    if system is not None:
        base["system"] = system
    return tiny(**base)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("clock")
    out = {}
    for name, system in {
        "none": None,
        "synthetic": SYNTHETIC,
        "inf": {**SYNTHETIC, "round_deadline": float("inf"), "over_selection": 1.0},
        "avail": {**SYNTHETIC, "duty_cycle": 0.6, "period_s": 60.0},
        "avail_inf": {**SYNTHETIC, "duty_cycle": 0.6, "period_s": 60.0, "round_deadline": float("inf")},
        "over": {**SYNTHETIC, "over_selection": 1.5, "round_deadline": 60.0},
        "late": {**SYNTHETIC, "round_deadline": 7.5},
    }.items():
        extra = {}
        if name == "over":  # the work actually done: epoch ranges and stragglers
            extra = {"train": {**tiny()["train"], "epochs": [1, 3]}, "federation": STRAGGLING}
        out[name] = fedsim.run(_cfg(tiny, system, eval={"target_accuracy": [0.3, 0.99]}, **extra), out=root / name)
    return out


def test_without_a_system_section_every_result_is_unchanged(runs, tiny):
    none, syn = runs["none"].run_dir, runs["synthetic"].run_dir
    # the clock on, everyone always online, no deadline: training is untouched
    assert (none / "model.pt").read_bytes() == (syn / "model.pt").read_bytes()
    assert _rows(none / "metrics.jsonl") == _rows(syn / "metrics.jsonl", drop_sim=True)
    assert _rows(none / "clients.jsonl") == _rows(syn / "clients.jsonl", drop_sim=True)
    assert not any(k.startswith("sim_") for r in _rows(none / "metrics.jsonl") for k in r)
    summary = json.loads((none / "summary.json").read_text())
    assert "sim_time_s" not in summary and "participation" not in summary
    # no system section and system.source none are the same run, with the hash it had before
    targets = {"target_accuracy": [0.3, 0.99]}
    a = load_config(_cfg(tiny, eval=targets))
    b = load_config(_cfg(tiny, {"source": "none"}, eval=targets))
    assert config_hash(a) == config_hash(b) == summary["config_hash"]
    assert not any(k.startswith("system.") for k in identity(a))
    assert not any(k.startswith("system.") or k == "eval.target_accuracy" for k in identity(load_config(_cfg(tiny))))


def test_an_infinite_deadline_and_over_selection_1_are_none_byte_for_byte(runs):
    for a, b in (("synthetic", "inf"), ("avail", "avail_inf")):
        x, y = runs[a].run_dir, runs[b].run_dir
        assert (x / "model.pt").read_bytes() == (y / "model.pt").read_bytes()
        assert _rows(x / "metrics.jsonl") == _rows(y / "metrics.jsonl")
        assert _rows(x / "clients.jsonl") == _rows(y / "clients.jsonl")


def test_the_records_follow_fedscale_formula_and_rounds_end_at_the_last_aggregated(runs):
    r = runs["over"]
    cfg = load_config(r.run_dir / "config.yaml")
    prof = load_profiles(cfg)
    clients = _rows(r.run_dir / "clients.jsonl")
    metrics = _rows(r.run_dir / "metrics.jsonl")
    ok = [c for c in clients if c.get("status") == "ok" and c["stage"] == "train"]
    assert ok and sum(m["sim_surplus"] for m in metrics) > 0
    assert len({c["epochs"] for c in ok}) > 1 and len({(c["party"], c["steps"]) for c in ok}) > len(
        {c["party"] for c in ok}
    )
    for c in ok:
        want = 3.0 * 32 * c["steps"] * prof.ms_per_sample[c["party"]] / 1000
        assert abs(c["sim_compute_s"] - want) <= 1e-9
        assert abs(c["sim_upload_s"] - c["bytes_up"] * 8 / 1024 / prof.upload_kbps[c["party"]]) <= 1e-9
    end = 0.0
    for m in metrics:
        mine = [c for c in ok if c["round"] == m["round"]]
        assert m["clients"] == len(mine) == 3  # K = floor(0.75 x 4), of ceil(3 x 1.5) = 4 sampled
        assert m["sim_start_s"] == end and m["sim_end_s"] == end + max(c["sim_total_s"] for c in mine)
        end = m["sim_end_s"]
    s = r.summary
    assert s["sim_time_s"] == end and s["participation"]["replies"]["ok"] == len(ok)
    # the classes the aggregate saw: each aggregated reply's party's class counts, summed
    counts = json.loads((r.run_dir / "partition.json").read_text())["class_counts"]
    seen = np.sum([counts[c["party"]] for c in ok], axis=0)
    assert s["participation"]["class_share_seen"] == pytest.approx((seen / seen.sum()).tolist(), abs=1e-6)
    train = np.sum(counts, axis=0) / np.sum(counts)
    tv = 0.5 * np.abs(seen / seen.sum() - train).sum()
    assert s["participation"]["class_tv_seen"] == pytest.approx(tv, abs=1e-12)
    slowest = int(np.argmax(prof.ms_per_sample))  # the slowest quarter of 4 parties
    share = sum(c["party"] == slowest for c in ok) / len(ok)
    assert s["participation"]["slow_quartile_share"] == share
    # which parties: how often each one's reply was aggregated, and by speed quarter
    per_party = [sum(c["party"] == p for c in ok) for p in range(4)]
    assert s["participation"]["aggregated_per_party"] == per_party
    by_speed = [per_party[p] / len(ok) for p in np.argsort(prof.ms_per_sample, kind="stable")]
    assert s["participation"]["speed_quartile_share"] == pytest.approx(by_speed, abs=1e-12)
    assert s["participation"]["speed_quartile_share"][-1] == share
    first = next((m for m in metrics if m["test_accuracy"] >= 0.3), None)
    updates = None if first is None else sum(m["clients"] for m in metrics if m["round"] <= first["round"])
    want = (
        None
        if first is None
        else {"round": first["round"], "sim_time_s": first["sim_end_s"], "client_updates": updates}
    )
    assert s["time_to_accuracy"] == {"0.3": want, "0.99": None}


def test_a_deadline_drops_late_replies_and_the_round_ends_at_it(runs):
    r = runs["late"]
    clients = [c for c in _rows(r.run_dir / "clients.jsonl") if c["stage"] == "train"]
    for m in _rows(r.run_dir / "metrics.jsonl"):
        mine = [c for c in clients if c["round"] == m["round"]]
        late = [c for c in mine if c["status"] == "late"]
        assert m["sim_late"] == len(late) and all(c["sim_total_s"] > 7.5 for c in late)
        assert all(c["sim_total_s"] <= 7.5 for c in mine if c["status"] == "ok")
        assert m["clients"] == len(mine) - len(late)
        assert m["sim_end_s"] == m["sim_start_s"] + (7.5 if late else max(c["sim_total_s"] for c in mine))
    assert r.summary["participation"]["replies"]["late"] > 0


def test_a_party_offline_at_the_rounds_start_is_never_sampled(runs):
    r = runs["avail"]
    prof = load_profiles(load_config(r.run_dir / "config.yaml"))
    metrics = {m["round"]: m for m in _rows(r.run_dir / "metrics.jsonl")}
    train = [c for c in _rows(r.run_dir / "clients.jsonl") if c["stage"] == "train"]
    assert train
    for c in train:
        start = metrics[c["round"]]["sim_start_s"]
        assert prof.availability.online(start)[c["party"]], c
        if c["status"] == "offline":
            assert start + c["sim_total_s"] > prof.availability.online_until(c["party"], start)


def _refused(tmp_path, tiny, capsys, system) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_cfg(tiny, system)))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith(("WARNING", "INFO"))]
    assert len(err) == 1 and err[0].startswith("fedsim: error: "), err
    assert not out.exists() or not any(out.iterdir())
    return err[0]


def _csv(path: Path, rows: list[str]) -> str:
    path.write_text("ms_per_sample,upload_kbps,download_kbps,availability,period_s\n" + "\n".join(rows) + "\n")
    return str(path)


def test_bad_traces_are_one_line_and_exit_2(tmp_path, tiny, capsys):
    good = "20,1000,5000,,"
    few = _csv(tmp_path / "few.csv", [good] * 3)
    assert "has 4 parties" in _refused(tmp_path, tiny, capsys, {"source": "file", "path": few})
    neg = _csv(tmp_path / "neg.csv", [good, "-5,1000,5000,,", good, good])
    err = _refused(tmp_path, tiny, capsys, {"source": "file", "path": neg})
    assert "ms_per_sample of party 1 is -5.0; allowed: a finite number > 0" in err
    over = _csv(tmp_path / "over.csv", [good, good, "20,1000,5000,0-100;50-200,1000", good])
    err = _refused(tmp_path, tiny, capsys, {"source": "file", "path": over})
    assert "[0, 100) and [50, 200) of party 2 overlap; allowed: sorted, disjoint" in err
    dev = tmp_path / "device.pkl"
    dev.write_bytes(pickle.dumps({i: {"computation": 10.0, "communication": 900.0} for i in range(1, 4)}))
    err = _refused(tmp_path, tiny, capsys, {"source": "fedscale", "device_file": str(dev)})
    assert "has 3 clients; the federation has 4 parties" in err


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_a_fedscale_pickle_runs_nothing(tmp_path, tiny, capsys):
    _Evil.marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({1: {"computation": _Evil(), "communication": 1.0}}))
    err = _refused(tmp_path, tiny, capsys, {"source": "fedscale", "device_file": str(evil)})
    assert "allowed: only dicts, lists, tuples, numbers and strings" in err
    assert not _Evil.marker.exists()
    np_pickle = tmp_path / "np.pkl"
    np_pickle.write_bytes(pickle.dumps({1: {"computation": np.float64(1.0), "communication": 1.0}}))
    assert "numpy" in _refused(tmp_path, tiny, capsys, {"source": "fedscale", "device_file": str(np_pickle)})


def test_fedscale_and_file_sources_run(tmp_path, tiny):
    dev, trace = tmp_path / "device.pkl", tmp_path / "trace.json"
    dev.write_bytes(pickle.dumps({i: {"computation": 5.0 + i, "communication": 800.0 + 10 * i} for i in range(1, 7)}))
    trace.write_text(
        json.dumps({str(i): {"active": [0, 50], "inactive": [40, 90], "finish_time": 100} for i in range(1, 7)})
    )
    system = {"source": "fedscale", "device_file": str(dev), "trace_file": str(trace)}
    a = fedsim.run(_cfg(tiny, system, federation={"rounds": 2}), out=tmp_path / "fs")
    assert a.summary["status"] == "finished" and a.summary["sim_time_s"] > 0
    table = tmp_path / "p.json"
    table.write_text(json.dumps([{"ms_per_sample": 3.0, "upload_kbps": 500, "download_kbps": 900}] * 4))
    b = fedsim.run(_cfg(tiny, {"source": "file", "path": str(table)}, federation={"rounds": 1}), out=tmp_path / "f")
    compute = [c["sim_compute_s"] for c in _rows(b.run_dir / "clients.jsonl") if c.get("status") == "ok"]
    steps = [c["steps"] for c in _rows(b.run_dir / "clients.jsonl") if c.get("status") == "ok"]
    assert compute == pytest.approx([3.0 * 32 * s * 3.0 / 1000 for s in steps], abs=1e-12)


CLOCKED = {**SYNTHETIC, "duty_cycle": 0.6, "period_s": 60.0, "over_selection": 1.4, "round_deadline": 15.0}


def test_a_resumed_run_continues_the_clock_exactly(tmp_path, tiny):
    ref = fedsim.run(_cfg(tiny, CLOCKED, federation={"rounds": 4, "fraction_fit": 0.5}), out=tmp_path / "ref")
    part = _cfg(tiny, CLOCKED, federation={"rounds": 2, "fraction_fit": 0.5})
    fedsim.run(part, out=tmp_path / "two")
    more = _cfg(tiny, CLOCKED, federation={"rounds": 4, "fraction_fit": 0.5})
    done = fedsim.run(more, out=tmp_path / "two", resume=True)
    assert (ref.run_dir / "model.pt").read_bytes() == (done.run_dir / "model.pt").read_bytes()
    assert _rows(ref.run_dir / "metrics.jsonl") == _rows(done.run_dir / "metrics.jsonl")
    assert _rows(ref.run_dir / "clients.jsonl") == _rows(done.run_dir / "clients.jsonl")
    assert ref.summary["sim_time_s"] == done.summary["sim_time_s"] > 0


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_clock_included(tmp_path, tiny, kill_and_resume):
    cfg = _cfg(tiny, CLOCKED, federation={"rounds": 5, "fraction_fit": 0.5}, data={"n_train": 1200})
    ref = fedsim.run(cfg, out=tmp_path / "ref")
    out = kill_and_resume(cfg, tmp_path, 2)
    assert (ref.run_dir / "model.pt").read_bytes() == (out / "model.pt").read_bytes()
    assert _rows(ref.run_dir / "metrics.jsonl") == _rows(out / "metrics.jsonl")
    assert _rows(ref.run_dir / "clients.jsonl") == _rows(out / "clients.jsonl")
    assert json.loads((out / "summary.json").read_text())["sim_time_s"] == ref.summary["sim_time_s"]


def test_the_clock_times_the_compressed_payload(tmp_path, tiny):
    """With a compressor the upload is the payload's bytes (issue 31's bytes_up), so a
    reply's simulated upload shrinks with it: FedScale's formula on those bytes."""
    cfg = _cfg(tiny, SYNTHETIC, comm={"compressor": "topk", "density": 0.1})
    plain = fedsim.run(_cfg(tiny, SYNTHETIC), out=tmp_path / "plain")
    packed = fedsim.run(cfg, out=tmp_path / "topk")
    prof = load_profiles(load_config(packed.run_dir / "config.yaml"))
    mine = [c for c in _rows(packed.run_dir / "clients.jsonl") if c.get("status") == "ok" and c["stage"] == "train"]
    full = [c for c in _rows(plain.run_dir / "clients.jsonl") if c.get("status") == "ok" and c["stage"] == "train"]
    assert mine and max(c["bytes_up"] for c in mine) < 0.25 * min(c["bytes_up"] for c in full)
    for c in mine:
        assert abs(c["sim_upload_s"] - c["bytes_up"] * 8 / 1024 / prof.upload_kbps[c["party"]]) <= 1e-9
    # with comm.downlink the download is the party's catch-up (the compressed broadcasts
    # it missed, or the full model): FedScale's formula on those bytes too
    down = fedsim.run(
        _cfg(tiny, SYNTHETIC, comm={"compressor": "topk", "density": 0.1, "downlink": True}), out=tmp_path / "d"
    )
    rows = [c for c in _rows(down.run_dir / "clients.jsonl") if c.get("status") == "ok" and c["stage"] == "train"]
    assert min(c["bytes_down"] for c in rows) < 0.25 * min(c["bytes_down"] for c in full)
    for c in rows:
        assert abs(c["sim_download_s"] - c["bytes_down"] * 8 / 1024 / prof.download_kbps[c["party"]]) <= 1e-9


def test_client_level_dp_takes_the_clock_but_not_what_chooses_or_drops_parties(tiny):
    pytest.importorskip("dp_accounting", reason="privacy modes need the privacy extra: pip install -e '.[privacy]'")
    dp = {"mode": "central-fixed", "noise_multiplier": 0.5}
    assert load_config(_cfg(tiny, SYNTHETIC, privacy=dp)).system.source == "synthetic"
    assert load_config(_cfg(tiny, {**SYNTHETIC, "round_deadline": float("inf")}, privacy=dp))
    for system in ({"over_selection": 1.3}, {"round_deadline": 30.0}, {"duty_cycle": 0.5}):
        with pytest.raises(ConfigError, match="client-level differential privacy: its accounting assumes"):
            load_config(_cfg(tiny, {**SYNTHETIC, **system}, privacy=dp))
