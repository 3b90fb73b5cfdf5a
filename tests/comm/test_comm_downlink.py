"""The compressed broadcast (``comm.downlink``): what a party is charged to catch up,
the server's residual loses nothing, the payload is its formula, ``downlink: false`` is
today's run, and a stopped and resumed run is byte-equal with the server's residual."""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import torch

import fedsim
from fedsim.comm import codecs
from fedsim.comm.downlink import Broadcast
from fedsim.comm.update import RESIDUAL, UpdateCodec
from fedsim.config.load import load_config
from fedsim.errors import ConfigError
from fedsim.schema.identity import identity
from strategies.rounds import Aggregate

SHAPES = {"conv.weight": (8, 3, 5, 5), "conv.bias": (8,), "fc.weight": (10, 200), "fc.bias": (10,)}


def _rows(path):
    drop = ("round_time_s", "time_s", "train_time_s", "wall_time_s")
    return [{k: v for k, v in json.loads(x).items() if not any(t in k for t in drop)} for x in path.open()]


def _model(run_dir):
    return torch.load(run_dir / "model.pt", weights_only=True)


def _broadcast(name="stc", **own) -> Broadcast:
    params = codecs.get(name).Params(compressor=name, downlink=True, **own)
    return Broadcast(UpdateCodec(codecs.get(name), params), seed=0)


def test_a_party_downloads_the_broadcasts_it_missed_or_the_full_model():
    b = _broadcast()
    b.sizes = [100, 200, 300]  # broadcasts 1, 2, 3
    b.synced = {1: 1, 2: 3, 3: 0}
    # model version 3 (round 4's train messages); every message holds 40 bytes besides the model's 550
    got = b.download(3, [0, 1, 2, 3], [590] * 4, 550)
    # party 0 never seen: the full model; 1 holds version 1: broadcasts 2 and 3 (500 < 550);
    # 2 is current: nothing; 3 holds version 0: 600 > 550, so the full model
    assert got == [590, 40 + 500, 40, 590]
    assert b.synced == {0: 3, 1: 3, 2: 3, 3: 3}
    # rounds 4 and 5 aggregated nothing (no valid reply): they broadcast nothing
    assert b.download(5, [2], [590], 550) == [40 + 0] and b.sizes == [100, 200, 300, 0, 0]


class _Mean:
    """An inner aggregator whose aggregate is a given next state."""

    def __init__(self, state):
        self.state = state

    def aggregate(self, server_round, global_state, outcomes):
        return Aggregate(OrderedDict(self.state))


def test_the_server_residual_loses_nothing_and_the_payload_is_its_formula():
    """sum_t decode(payload_t) + e_s == sum_t (w_agg_t - w^t) to float tolerance, the new
    model is w^t plus the decoded payload, and each broadcast's bytes are the codec's
    formula plus one .npy header, the payload's name and the 4-byte names record."""
    gen = torch.Generator().manual_seed(1)
    b = _broadcast(density=0.05)
    w0 = OrderedDict((k, torch.randn(s, generator=gen) * 0.1) for k, s in SHAPES.items())
    w, true_total = w0, {k: torch.zeros(s, dtype=torch.float64) for k, s in SHAPES.items()}
    sizes = [math.prod(s) for s in SHAPES.values()]
    formula = codecs.get("stc").formula(b.codec.params, sizes)
    headers = 3 * 128 + len("@idx@bits@mu") + len("all") + 1
    for t in range(1, 6):
        agg = OrderedDict((k, v + torch.randn(v.shape, generator=gen) * 0.01) for k, v in w.items())
        for k in w:
            true_total[k] += agg[k].double() - w[k].double()
        out = b.aggregate(_Mean(agg), t, w, [])
        assert out.metrics["bytes_broadcast"] == b.sizes[-1] == formula + headers
        assert len(b.sizes) == t
        changed = sum(int((out.state[k] != w[k]).sum()) for k in w)
        assert changed == sum(math.ceil(0.05 * n) for n in sizes)  # k coordinates a tensor move
        w = out.state
    for k in w:
        lhs = w[k].double() - w0[k].double() + b.residual[RESIDUAL + k].double().view(w[k].shape)
        assert torch.allclose(lhs, true_total[k], atol=1e-6), float((lhs - true_total[k]).abs().max())
        assert float(b.residual[RESIDUAL + k].abs().max()) > 0


def test_downlink_false_is_todays_run_and_true_needs_a_compressor(tmp_path, tiny):
    cfg = {"federation": {"rounds": 2, "fraction_fit": 0.75}}
    stc = {"compressor": "stc", "density": 0.05}
    today = fedsim.run(tiny(comm=stc, **cfg), out=tmp_path / "today").run_dir
    off = fedsim.run(tiny(comm={**stc, "downlink": False}, **cfg), out=tmp_path / "off").run_dir
    assert _rows(today / "metrics.jsonl") == _rows(off / "metrics.jsonl")
    assert _rows(today / "clients.jsonl") == _rows(off / "clients.jsonl")
    a, b = _model(today), _model(off)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert identity(load_config(tiny(comm=stc))) == identity(load_config(tiny(comm={**stc, "downlink": False})))
    try:
        load_config(tiny(comm={"downlink": True}))
    except ConfigError as exc:
        assert "comm.downlink" in str(exc) and "'none'" in str(exc)
    else:
        raise AssertionError("comm.downlink with compressor none was accepted")


def test_every_party_is_charged_the_compressed_broadcasts_and_resume_is_byte_equal(tmp_path, tiny):
    """All 4 parties every round: round 1 downloads the full model, round t > 1 the
    broadcast of round t - 1 instead of it (per reply, per round, the totals); 2 rounds
    then resumed to 3 equals 3 in one go (the server's residual is checkpointed)."""
    comm = {"compressor": "stc", "density": 0.05, "downlink": True}
    ref = fedsim.run(tiny(federation={"rounds": 3}), out=tmp_path / "none").run_dir
    run = fedsim.run(tiny(comm=comm, federation={"rounds": 3}), out=tmp_path / "down").run_dir
    m_ref, m, c = _rows(ref / "metrics.jsonl"), _rows(run / "metrics.jsonl"), _rows(run / "clients.jsonl")
    full = m_ref[0]["bytes_down"] // 4  # one party's train message, the model as it is
    model_bytes = sum(math.prod(v.shape) * 4 + 128 + len(k) for k, v in _model(ref).items())
    assert m[0]["bytes_down"] == m_ref[0]["bytes_down"]  # first contact: the full model
    for t in (2, 3):
        per_party = full - model_bytes + m[t - 2]["bytes_broadcast"]
        assert [x["bytes_down"] for x in c if x["round"] == t] == [per_party] * 4
        assert m[t - 1]["bytes_down"] == 4 * per_party < m_ref[t - 1]["bytes_down"] / 10
    assert m[-1]["bytes_down_total"] == sum(x["bytes_down"] for x in m)
    out = tmp_path / "resumed"
    fedsim.run(tiny(comm=comm, federation={"rounds": 2}), out=out)
    fedsim.run(tiny(comm=comm, federation={"rounds": 3}), out=out, resume=True)
    assert _rows(run / "metrics.jsonl") == _rows(out / "metrics.jsonl")
    a, b = _model(run), _model(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
