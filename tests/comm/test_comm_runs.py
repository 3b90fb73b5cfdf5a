"""Compressors in runs: none changes nothing, lossless settings give today's results byte
for byte, the recorded bytes are the payload's, error feedback resumes byte-equal after
kill -9, and each composition runs or is refused with its reason."""

from __future__ import annotations

import json
import math

import pytest
import torch

import fedsim
from fedsim.comm.update import RESIDUAL, VELOCITY, update_codec
from fedsim.config.load import load_config
from fedsim.errors import ConfigError
from fedsim.rundir.store import ClientStateStore, RunStore
from fedsim.schema.identity import identity
from fedsim.schema.sections import CommConfig

TIMING = ("round_time_s", "time_s", "train_time_s", "wall_time_s")
BYTES = ("bytes_up", "bytes_up_total", "bytes_total", "mb_total")


def _rows(path, drop=TIMING):
    return [
        {k: v for k, v in json.loads(line).items() if not any(t in k for t in drop)}
        for line in path.read_text().splitlines()
    ]


def _model(run_dir):
    return torch.load(run_dir / "model.pt", weights_only=True)


def _same_model(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_none_is_the_default_and_leaves_the_reply_and_the_identity_as_they_were(tiny):
    cfg = load_config(tiny())
    assert cfg.comm.compressor == "none" and update_codec(cfg.comm) is None
    assert not any(k.startswith("comm.") for k in identity(cfg))  # config hashes of older runs hold
    assert any(k.startswith("comm.") for k in identity(load_config(tiny(comm={"compressor": "topk"}))))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny):
    return fedsim.run(tiny(), out=tmp_path_factory.mktemp("ref") / "none").run_dir


def test_topk_at_density_one_gives_todays_run_byte_for_byte(tmp_path, tiny, reference):
    run = fedsim.run(tiny(comm={"compressor": "topk", "density": 1.0}), out=tmp_path / "topk1").run_dir
    assert _same_model(_model(reference), _model(run))
    drop = TIMING + BYTES
    assert _rows(reference / "metrics.jsonl", drop) == _rows(run / "metrics.jsonl", drop)
    assert _rows(reference / "clients.jsonl", drop) == _rows(run / "clients.jsonl", drop)


def test_the_recorded_bytes_are_the_payloads(tmp_path, tiny, reference):
    run = fedsim.run(tiny(comm={"compressor": "topk", "density": 0.01}), out=tmp_path / "topk").run_dir
    ref_rows, rows = _rows(reference / "clients.jsonl"), _rows(run / "clients.jsonl")
    assert [r["party"] for r in rows] == [r["party"] for r in ref_rows]
    for a, b in zip(ref_rows, rows):
        assert b["bytes_up"] < a["bytes_up"] / 20  # ~1% of the coordinates at 8 bytes, with headers
    m_ref, m = _rows(reference / "metrics.jsonl"), _rows(run / "metrics.jsonl")
    assert [r["bytes_down"] for r in m] == [r["bytes_down"] for r in m_ref]  # the broadcast is not compressed
    assert [r["bytes_up"] for r in m] == [sum(c["bytes_up"] for c in rows if c["round"] == r["round"]) for r in m]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["bytes_up_total"] == sum(r["bytes_up"] for r in m)


def _running_sums(rows, key):
    out, total = [], 0
    for r in rows:
        total += r[key]
        out.append(total)
    return out


@pytest.mark.parametrize(
    "comm", [{}, {"compressor": "topk", "density": 0.05}, {"compressor": "sign", "budget_mb": 100.0}]
)
def test_every_row_holds_the_bytes_sent_so_far(tmp_path, tiny, comm):
    cfg = tiny(comm=comm, federation={"rounds": 3, "fraction_fit": 0.75}, train={"epochs": 1})
    run = fedsim.run(cfg, out=tmp_path / "run").run_dir
    m, c = _rows(run / "metrics.jsonl"), _rows(run / "clients.jsonl")
    up_by_round = [sum(x["bytes_up"] for x in c if x["round"] == r["round"] and "bytes_up" in x) for r in m]
    assert [r["bytes_up_total"] for r in m] == _running_sums([{"b": b} for b in up_by_round], "b")
    assert [r["bytes_down_total"] for r in m] == _running_sums(m, "bytes_down")
    assert m[-1]["bytes_down_total"] == 3 * m[0]["bytes_down"] > 0  # 3 of 4 parties every round, the same model
    if "budget_mb" in comm:
        assert all(r["bytes_total"] == r["bytes_up_total"] + r["bytes_down_total"] for r in m)
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["bytes_up_total"], summary["bytes_down_total"]) == (
        m[-1]["bytes_up_total"],
        m[-1]["bytes_down_total"],
    )


@pytest.mark.parametrize(
    ("strategy", "extra"),
    [("krum", {}), ("fedper", {"eval": {"local_test": "split"}}), ("fedbn", {"model": {"batch_norm": True}})],
)
def test_robust_personal_and_fedbn_runs_see_decoded_replies(tmp_path, tiny, strategy, extra):
    cfg = tiny(strategy={"name": strategy}, comm={"compressor": "stc", "density": 0.1}, **extra)
    run = fedsim.run(cfg, out=tmp_path / strategy).run_dir
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["test_accuracy"] > 0.25  # 4 classes
    store = ClientStateStore(RunStore(run).client_state)
    party = int(_rows(run / "clients.jsonl")[0]["party"])
    full, own = store.load(party, extensions=True), store.load(party)
    assert any(k.startswith(RESIDUAL) for k in full) and not any(k.startswith(RESIDUAL) for k in own or {})
    if strategy == "fedper":  # shared entries only: no residual of the personal head
        assert not any(k.startswith(RESIDUAL + "classifier") for k in full)


@pytest.mark.parametrize(
    ("sections", "says"),
    [
        ({"strategy": {"name": "scaffold"}}, "its server variate c must stay the mean"),
        ({"strategy": {"name": "feddyn"}}, "two halves of one dual variable"),
        ({"strategy": {"name": "feddc", "momentum": 0.0}}, "H stops being the sum"),
        ({"privacy": {"mode": "client-fixed"}}, "the noise no longer covers it"),
    ],
)
def test_a_lossy_codec_is_refused_with_its_reason(tiny, sections, says):
    if "feddc" in str(sections):
        sections = {"strategy": {"name": "feddc"}, "train": {"momentum": 0.0}}
    with pytest.raises(ConfigError, match=says):
        load_config(tiny(comm={"compressor": "qsgd"}, **sections))
    load_config(tiny(**sections))  # without the codec it runs


@pytest.mark.parametrize("mode", ["central-fixed", "dpsgd"])
def test_a_codec_with_server_side_clipping_or_dpsgd_is_accepted(tiny, mode):
    pytest.importorskip("dp_accounting")
    cfg = load_config(tiny(comm={"compressor": "sign"}, privacy={"mode": mode}))
    assert cfg.comm.compressor == "sign"


def test_budget_and_codec_keys_are_checked(tiny):
    with pytest.raises(ConfigError, match="comm.density"):
        load_config(tiny(comm={"compressor": "topk", "density": 1.5}))
    with pytest.raises(ConfigError, match="comm.budget_mb"):
        load_config(tiny(comm={"budget_mb": -1}))
    with pytest.raises(ConfigError, match="set comm.error_feedback true"):
        load_config(tiny(comm={"compressor": "topk", "momentum_correction": 0.9, "error_feedback": False}))
    with pytest.raises(ConfigError, match="comm.momentum_correction"):
        load_config(tiny(comm={"compressor": "topk", "momentum_correction": 1.0}))
    assert isinstance(load_config(tiny()).comm, CommConfig)


@pytest.mark.slow  # 7 s: a real process killed mid-run; the fast version below stops and resumes in-process
@pytest.mark.parametrize(
    "comm", [{"compressor": "topk", "density": 0.05}, {"compressor": "stc", "density": 0.05, "downlink": True}]
)
def test_sigkill_then_resume_with_error_feedback_is_byte_equal(tmp_path, tiny, kill_and_resume, comm):
    """With ``comm.downlink`` the server's residual and what each party holds are server state."""
    cfg = tiny(
        comm=comm,
        federation={"rounds": 5, "fraction_fit": 0.75},
        data={"n_train": 1200},
    )
    ref = fedsim.run(cfg, out=tmp_path / "ref").run_dir
    out = kill_and_resume(cfg, tmp_path, 2)
    assert _same_model(_model(ref), _model(out))
    assert _rows(ref / "metrics.jsonl") == _rows(out / "metrics.jsonl")
    assert _rows(ref / "clients.jsonl") == _rows(out / "clients.jsonl")
    a, b = ClientStateStore(RunStore(ref).client_state), ClientStateStore(RunStore(out).client_state)
    for party in range(4):
        sa, sb = a.load(party, extensions=True) or {}, b.load(party, extensions=True) or {}
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_byte_budget_stops_the_run_and_a_larger_one_resumes_it(tmp_path, tiny):
    cfg = tiny(federation={"rounds": 4})
    full = fedsim.run(cfg, out=tmp_path / "full").run_dir
    per_round = [r["bytes_up"] + r["bytes_down"] for r in _rows(full / "metrics.jsonl")]
    budget = (sum(per_round[:2]) + per_round[2] // 2) / 1e6  # round 3 would pass it
    out = tmp_path / "budget"
    first = fedsim.run(tiny(federation={"rounds": 4}, comm={"budget_mb": budget}), out=out)
    rows = _rows(out / "metrics.jsonl")
    assert first.summary["status"] == "budget" and [r["round"] for r in rows] == [1, 2]
    assert rows[-1]["bytes_total"] == sum(per_round[:2]) and "comm.budget_mb" in rows[-1]["comm_stop"]
    again = fedsim.run(tiny(federation={"rounds": 4}, comm={"budget_mb": budget}), out=out, resume=True)
    assert again.summary["status"] == "budget" and again.summary["rounds"] == 2  # the same budget: nothing more
    done = fedsim.run(tiny(federation={"rounds": 4}, comm={"budget_mb": 100.0}), out=out, resume=True)
    assert done.summary["status"] == "finished" and done.summary["rounds"] == 4
    assert _same_model(_model(full), _model(out))


@pytest.mark.parametrize("dgc", [{}, {"momentum_correction": 0.9}, {"momentum_correction": 0.9, "warmup_rounds": 2}])
def test_a_stopped_and_resumed_run_with_error_feedback_is_byte_equal(tmp_path, tiny, dgc):
    """The fast version of the kill -9 test: 2 rounds, then resumed to 3, equal to 3 in
    one go, the parties' residuals (client state, DGC's velocities with momentum
    correction) included; with DGC's warm-up the replies of rounds 1, 2 and 3 hold
    25%, 6.25% and 5% of the coordinates."""
    momentum = dgc.get("momentum_correction", 0.0)
    comm = {"compressor": "topk", "density": 0.05, **dgc}
    cfg = {"comm": comm, "federation": {"rounds": 3, "fraction_fit": 0.75}}
    ref = fedsim.run(tiny(**cfg), out=tmp_path / "ref").run_dir
    out = tmp_path / "resumed"
    fedsim.run(tiny(**{**cfg, "federation": {"rounds": 2, "fraction_fit": 0.75}}), out=out)
    fedsim.run(tiny(**cfg), out=out, resume=True)
    assert _same_model(_model(ref), _model(out))
    assert _rows(ref / "metrics.jsonl") == _rows(out / "metrics.jsonl")  # the cumulative bytes too
    rows = _rows(out / "metrics.jsonl")
    assert [r["bytes_up_total"] for r in rows] == _running_sums(rows, "bytes_up") and len(rows) == 3
    a, b = ClientStateStore(RunStore(ref).client_state), ClientStateStore(RunStore(out).client_state)
    residuals = velocities = 0
    for party in range(4):
        sa, sb = a.load(party, extensions=True) or {}, b.load(party, extensions=True) or {}
        residuals += sum(k.startswith(RESIDUAL) for k in sa)
        velocities += sum(k.startswith(VELOCITY) for k in sa)
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert residuals > 0  # the parties that trained keep their error-feedback residuals
    assert (velocities > 0) == (momentum > 0)
    if dgc.get("warmup_rounds"):
        n = [p.numel() for p in _model(ref).values() if p.is_floating_point()]  # the simple CNN: no buffers
        per_reply = [r["bytes_up"] / r["clients"] for r in rows]
        for t, share in [(1, 0.25), (2, 0.0625), (3, 0.05)]:
            k = sum(math.ceil(share * m) for m in n)
            assert 8 * k <= per_reply[t - 1] <= 8 * k + 600, (t, per_reply[t - 1], 8 * k)
