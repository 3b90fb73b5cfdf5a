"""Asynchronous runs: the reductions (FedBuff to FedAvg, FedAsync to sequential
training), staleness on a hand-built schedule, exact repeats and resumes, what composes
and what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fedsim
from fedsim.config.load import load_config
from fedsim.errors import ConfigError
from fedsim.schema.identity import identity
from strategies.strategy import FedsimStrategy

TIMING = ("round_time_s", "time_s", "train_time_s", "wall_time_s")
#: equal devices: every reply of equal work takes the same simulated time
EQUAL = {"source": "synthetic", "compute_spread": 0.0, "bandwidth_spread": 0.0}


def _rows(path: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if not any(t in k for t in TIMING)}
        for line in path.read_text().splitlines()
    ]


def _model(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def _cfg(tiny, asynchronous: dict | None = None, system: dict | None = None, **sections) -> dict:
    # iid over 4 parties of 100 samples: equal work, so equal devices give equal durations
    base = {
        "partition": {"scheme": "iid", "n_parties": 4},
        "federation": {"rounds": 2},
        "eval": {"model_heterogeneity": False},
        "system": system or EQUAL,
    }
    if asynchronous is not None:
        base["asynchronous"] = asynchronous
    base.update(sections)
    return tiny(**base)


# the server step at its defaults: eta_g = 1, no momentum
FEDBUFF_AS_FEDAVG = {"mode": "fedbuff", "concurrency": 4, "buffer_size": 4}


def test_fedbuff_with_k_the_cohort_no_staleness_lr_1_no_momentum_is_fedavg(tmp_path, tiny):
    sync = fedsim.run(_cfg(tiny), out=tmp_path / "sync")
    buff = fedsim.run(_cfg(tiny, FEDBUFF_AS_FEDAVG), out=tmp_path / "buff")
    assert _max_diff(_model(sync.run_dir), _model(buff.run_dir)) <= 1e-6
    rows = _rows(buff.run_dir / "metrics.jsonl")
    assert [(r["updates_applied"], r["staleness_max"]) for r in rows] == [(4, 0), (4, 0)]
    # the same simulated time: each step waits for the same four replies as a round
    assert [r["sim_end_s"] for r in rows] == pytest.approx(
        [r["sim_end_s"] for r in _rows(sync.run_dir / "metrics.jsonl")]
    )


def test_fedasync_with_a_1_and_concurrency_1_is_sequential_training(tmp_path, tiny, monkeypatch):
    fa = {"mode": "fedasync", "concurrency": 1, "mixing": 1.0, "staleness": "constant"}
    run = fedsim.run(_cfg(tiny, fa, federation={"rounds": 4}), out=tmp_path / "async")
    order = [r["party"] for r in _rows(run.run_dir / "clients.jsonl")]
    assert len(order) == 4 and all(r["staleness"] == 0 for r in _rows(run.run_dir / "clients.jsonl"))
    # by hand: one party a round, in the arrival order, each training the last one's model
    monkeypatch.setattr(FedsimStrategy, "_train_cohort", lambda self, r, *a, **k: [order[r - 1]])
    hand = fedsim.run(_cfg(tiny, federation={"rounds": 4}), out=tmp_path / "hand")
    assert _max_diff(_model(run.run_dir), _model(hand.run_dir)) <= 1e-6


def test_staleness_of_a_hand_built_schedule(tmp_path, tiny):
    """Four parties all dispatched at 0 with durations 1 : 2.5 : 3.7 : 10 (ms per sample;
    equal work, fast links), FedAsync: every arrival is a step and its party goes again
    with the new version. By hand: p0 (v0) at 1, p0 (v1) at 2, p1 (v0) at 2.5, p0 (v2)
    at 3, p2 (v0) at 3.7, p0 (v4) at 4: staleness 0, 0, 2, 1, 4, 1."""
    table = tmp_path / "devices.json"
    table.write_text(
        json.dumps([{"ms_per_sample": m, "upload_kbps": 1e9, "download_kbps": 1e9} for m in (10, 25, 37, 100)])
    )
    fa = {"mode": "fedasync", "concurrency": 4}
    run = fedsim.run(
        _cfg(tiny, fa, {"source": "file", "path": str(table)}, federation={"rounds": 6}), out=tmp_path / "a"
    )
    rows = _rows(run.run_dir / "clients.jsonl")
    assert [(r["party"], r["version"], r["staleness"]) for r in rows] == [
        (0, 0, 0),
        (0, 1, 0),
        (1, 0, 2),
        (0, 2, 1),
        (2, 0, 4),
        (0, 4, 1),
    ]
    unit = rows[0]["sim_total_s"]
    assert [r["sim_arrival_s"] / unit for r in rows] == pytest.approx([1, 2, 2.5, 3, 3.7, 4], rel=1e-6)
    assert [r["sim_dispatch_s"] / unit for r in rows] == pytest.approx([0, 1, 0, 2, 0, 3], rel=1e-6)
    metrics = _rows(run.run_dir / "metrics.jsonl")
    assert [m["staleness_max"] for m in metrics] == [0, 0, 2, 1, 4, 1]
    assert [m["sim_end_s"] for m in metrics] == [r["sim_arrival_s"] for r in rows]
    # a second run of the same seed: the same arrivals and the same bytes
    again = fedsim.run(
        _cfg(tiny, fa, {"source": "file", "path": str(table)}, federation={"rounds": 6}), out=tmp_path / "b"
    )
    assert _rows(again.run_dir / "clients.jsonl") == rows
    assert (again.run_dir / "model.pt").read_bytes() == (run.run_dir / "model.pt").read_bytes()


HETERO = {"source": "synthetic", "duty_cycle": 0.7, "period_s": 40.0}
BUFF = {"mode": "fedbuff", "concurrency": 3, "buffer_size": 2}


def test_a_stopped_and_resumed_run_is_byte_equal_parties_in_flight_included(tmp_path, tiny):
    six = dict(partition={"scheme": "dirichlet", "n_parties": 6, "min_size": 10}, federation={"rounds": 5})
    ref = fedsim.run(_cfg(tiny, BUFF, HETERO, **six), out=tmp_path / "ref")
    short = dict(six, federation={"rounds": 2})
    fedsim.run(_cfg(tiny, BUFF, HETERO, **short), out=tmp_path / "two")
    done = fedsim.run(_cfg(tiny, BUFF, HETERO, **six), out=tmp_path / "two", resume=True)
    clients = _rows(ref.run_dir / "clients.jsonl")
    assert max(r.get("staleness", 0) for r in clients) > 0  # parties were in flight across steps
    assert (ref.run_dir / "model.pt").read_bytes() == (done.run_dir / "model.pt").read_bytes()
    assert _rows(ref.run_dir / "metrics.jsonl") == _rows(done.run_dir / "metrics.jsonl")
    assert clients == _rows(done.run_dir / "clients.jsonl")


@pytest.mark.slow
def test_sigkill_then_resume_is_byte_equal(tmp_path, tiny, kill_and_resume):
    six = dict(partition={"scheme": "dirichlet", "n_parties": 6, "min_size": 10}, federation={"rounds": 8})
    cfg = _cfg(tiny, BUFF, HETERO, data={"n_train": 1200}, **six)
    ref = fedsim.run(cfg, out=tmp_path / "ref")
    out = kill_and_resume(cfg, tmp_path, 3)
    assert (ref.run_dir / "model.pt").read_bytes() == (out / "model.pt").read_bytes()
    assert _rows(ref.run_dir / "metrics.jsonl") == _rows(out / "metrics.jsonl")
    assert _rows(ref.run_dir / "clients.jsonl") == _rows(out / "clients.jsonl")


@pytest.mark.slow
@pytest.mark.ray
def test_ray_gives_the_same_arrivals_and_bytes(tmp_path, tiny):
    six = dict(partition={"scheme": "dirichlet", "n_parties": 6, "min_size": 10}, federation={"rounds": 4})
    local = fedsim.run(_cfg(tiny, BUFF, HETERO, **six), out=tmp_path / "local")
    ray = fedsim.run(_cfg(tiny, BUFF, HETERO, engine={"name": "ray"}, **six), out=tmp_path / "ray")
    assert _rows(local.run_dir / "clients.jsonl") == _rows(ray.run_dir / "clients.jsonl")
    assert (local.run_dir / "model.pt").read_bytes() == (ray.run_dir / "model.pt").read_bytes()


def test_personal_layers_stay_home_and_fedprox_runs(tmp_path, tiny):
    fa = {"mode": "fedasync", "concurrency": 2}
    keep = {"plots": False, "keep_checkpoints": 5}
    per = fedsim.run(
        _cfg(tiny, fa, strategy={"name": "fedper"}, federation={"rounds": 3}, output=keep), out=tmp_path / "per"
    )
    start = torch.load(per.run_dir / "checkpoints" / "round_000000" / "state.pt", weights_only=True)["arrays"]
    end = _model(per.run_dir)
    heads = [k for k in end if k.startswith("classifier.")]
    assert heads and all(torch.equal(start[k], end[k]) for k in heads)  # never sent, never mixed
    assert any(not torch.equal(start[k], end[k]) for k in end if k.startswith("encoder."))
    assert per.summary["status"] == "finished" and "personal_test_accuracy" in json.dumps(per.summary)
    prox = fedsim.run(_cfg(tiny, FEDBUFF_AS_FEDAVG, strategy={"name": "fedprox"}), out=tmp_path / "prox")
    assert prox.summary["status"] == "finished"


@pytest.mark.parametrize(
    ("sections", "says"),
    [
        ({"strategy": {"name": "scaffold"}}, "with strategy 'scaffold': its server half (ScaffoldServer) is not"),
        ({"strategy": {"name": "fedadam"}}, "with strategy 'fedadam': its server half (fedadam's own server)"),
        ({"system": {"source": "none"}}, "needs the simulated clock for arrival times"),
        ({"system": {**EQUAL, "round_deadline": 30.0}}, "system.round_deadline and system.over_selection end"),
        ({"privacy": {"mode": "central-fixed"}}, "its accounting assumes a Poisson-sampled cohort per round"),
        ({"privacy": {"mode": "dpsgd"}}, "privacy.mode dpsgd: its accounting assumes synchronous rounds"),
        ({"attack": {"name": "sign-flip"}}, "attacks and defences act on a synchronous round's cohort"),
    ],
)
def test_what_does_not_compose_is_refused_with_its_reason(tiny, sections, says):
    with pytest.raises(ConfigError, match="asynchronous.mode fedbuff") as err:
        load_config(_cfg(tiny, {"mode": "fedbuff", "buffer_size": 2}, **sections))
    assert says in str(err.value)


def test_async_keys_are_checked_and_off_keeps_the_identity(tiny):
    with pytest.raises(ConfigError, match=r"'asynchronous.concurrency' = 9 is out of range; allowed: \[0, 4\]"):
        load_config(_cfg(tiny, {"mode": "fedasync", "concurrency": 9}))
    with pytest.raises(ConfigError, match="'asynchronous.concurrency' is read only with asynchronous.mode"):
        load_config(_cfg(tiny, {"mode": "off", "concurrency": 2}))
    with pytest.raises(ConfigError, match="'asynchronous.buffer_size' = 10 is out of range"):
        load_config(_cfg(tiny, {"mode": "fedbuff"}))
    with pytest.raises(ConfigError, match="asynchronous.mixing"):
        load_config(_cfg(tiny, {"mode": "fedasync", "mixing": 1.5}))
    off = load_config(_cfg(tiny))
    assert off.asynchronous.mode == "off" and not any(k.startswith("asynchronous") for k in identity(off))


def test_a_sweep_puts_synchronous_and_asynchronous_runs_on_one_time_axis(tmp_path, tiny):
    from fedsim.report import report
    from fedsim.sweeps import read_summary_csv

    base = _cfg(tiny, eval={"train_sample": 0, "target_accuracy": 0.3, "model_heterogeneity": False})
    grid = {"asynchronous": [{"label": "sync", "mode": "off"}, {"label": "buff", **FEDBUFF_AS_FEDAVG}]}
    result = fedsim.sweep({"name": "async", "base": base, "grid": grid, "seeds": [0]}, out=tmp_path / "sweep")
    rows = {r["asynchronous"]: r for r in read_summary_csv(result.sweep_dir / "summary.csv")}
    # FedBuff as FedAvg: the same model, so the same time and client updates to 30%
    assert rows["sync"]["tta_0.3_s"] == pytest.approx(rows["buff"]["tta_0.3_s"])
    assert rows["sync"]["tta_0.3_updates"] == rows["buff"]["tta_0.3_updates"] == 4 * rows["sync"]["tta_0.3_round"]
    assert "updates to 30%" in result.table_markdown
    assert "(figures/accuracy_vs_time.png)" in report(result.sweep_dir).read_text()
    run_dir = next(p for p in result.sweep_dir.iterdir() if p.name.startswith("asynchronous=buff"))
    n = int(rows["buff"]["tta_0.3_updates"])  # summary.csv reads numbers back as floats
    assert f", {n} client updates |" in report(run_dir).read_text()
    # a panel with an asynchronous run says that its rounds are server steps
    from fedsim.report.curves import round_axis
    from fedsim.report.load import load_sweep

    runs = {r.factors["asynchronous"]: r for r in load_sweep(result.sweep_dir).runs}
    assert round_axis([runs["sync"]]) == "round"
    assert round_axis([runs["sync"], runs["buff"]]) == "round (asynchronous runs: server step)"
