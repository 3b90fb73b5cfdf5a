"""The codecs' numbers: QSGD unbiased within its variance bound, error feedback loses
nothing, each payload's bytes are its formula, lossless settings rebuild w_k exactly."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from flwr.app import RecordDict

from fedsim.comm import codecs
from fedsim.comm.codecs.qsgd import quantize
from fedsim.comm.update import RESIDUAL, UpdateCodec
from fedsim.schema.sections import CommConfig

SHAPES = {"fc1.weight": (1024, 3072), "fc1.bias": (1024,), "fc2.weight": (512, 1024), "fc2.bias": (512,)}


def _params(name: str, **own):
    cls = codecs.get(name).Params
    return cls(compressor=name, **own) if cls is not CommConfig else CommConfig(compressor=name)


def _state(gen: torch.Generator, scale: float = 0.05) -> OrderedDict:
    return OrderedDict((k, torch.randn(s, generator=gen) * scale) for k, s in SHAPES.items())


def test_qsgd_is_unbiased_and_within_the_papers_variance_bound():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(64, generator=gen, dtype=torch.float64)
    s, n, runs = 4, 64, 100_000
    q, norm = quantize(v.expand(runs, n), s, gen)
    decoded = q.double() * norm[:, None] / s
    mean = decoded.mean(0)
    assert torch.linalg.vector_norm(mean - v) / torch.linalg.vector_norm(v) < 0.01
    var = ((decoded - v) ** 2).sum(1).mean()
    bound = min(n / s**2, math.sqrt(n) / s) * float(v @ v)  # Alistarh et al. 2017, Lemma 3.1
    assert 0 < var <= bound
    assert var > 0.1 * bound  # the bound is not vacuous here: s = 4 rounds coarsely


def test_qsgd_with_levels_that_round_exactly_gives_the_vector_back():
    # |v_i| / ||v|| * s is a whole number for every i: no randomness is left
    v = torch.tensor([3.0, -4.0, 0.0, 0.0], dtype=torch.float64)  # ||v|| = 5
    q, norm = quantize(v, 5, torch.Generator().manual_seed(1))
    assert torch.equal(q.double() * norm / 5, v)


@pytest.mark.parametrize("name", ["topk", "randk"])
def test_a_sparsifier_at_density_one_rebuilds_the_trained_weights_bit_for_bit(name):
    gen = torch.Generator().manual_seed(2)
    w, wk = _state(gen, 1.0), _state(gen, 1.0)  # large moves: sign changes, |d| > |w_k|
    codec = UpdateCodec(codecs.get(name), _params(name, density=1.0))
    enc = codec.encode(wk, w, None, gen)
    content = RecordDict({"arrays": enc.arrays, "comm": enc.keys})
    codec.decode(content, w)
    got = content["arrays"]
    assert all(torch.equal(torch.from_numpy(got[k].numpy()), wk[k]) for k in wk)
    assert all(float(r.abs().max()) == 0.0 for r in enc.residual.values())


@pytest.mark.parametrize("name", ["topk", "randk", "sign", "stc"])
def test_error_feedback_loses_nothing(name):
    """sum_t u_hat_t + e_T == sum_t d_t (Stich et al. 2018's memory), to float tolerance."""
    gen = torch.Generator().manual_seed(3)
    codec = UpdateCodec(codecs.get(name), _params(name))
    w = _state(gen)
    total_d = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in w.items()}
    total_sent = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in w.items()}
    residual = None
    for _ in range(6):
        wk = OrderedDict((k, v + torch.randn(v.shape, generator=gen) * 0.01) for k, v in w.items())
        enc = codec.encode(wk, w, residual, gen)
        for k in w:
            total_d[k] += wk[k].double() - w[k].double()
            total_sent[k] += enc.sent[k].view(w[k].shape)
        residual = enc.residual
        w = OrderedDict((k, (w[k].double() + enc.sent[k].view(w[k].shape)).float()) for k in w)
    for k in w:
        lhs = total_sent[k] + residual[RESIDUAL + k].double()
        assert torch.allclose(lhs, total_d[k], atol=1e-6), (k, float((lhs - total_d[k]).abs().max()))
        assert float(residual[RESIDUAL + k].abs().max()) > 0  # something was held back


KB = 1024
#: each codec's payload for the 3.7M coordinates of SHAPES, by hand (4 tensors)
N = sum(math.prod(s) for s in SHAPES.values())
K01 = sum(math.ceil(0.01 * math.prod(s)) for s in SHAPES.values())
FORMULAS = {
    "fp16": 2 * N,
    "bf16": 2 * N,
    "uniform8": N + 4 * 4,
    "qsgd": N + 4 * 4,  # levels 127: int8 levels, a float32 norm a tensor
    "topk": 8 * K01,  # an int32 index and a float32 value each
    "randk": 8 * K01,
    "sign": math.ceil(N / 8) + 4 * 4,  # a bit a coordinate, a float32 scale a tensor
    "stc": 4 * K01 + math.ceil(K01 / 8) + 4 * 4,  # indices, sign bits, a mu a tensor
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_each_payload_holds_the_bytes_of_its_formula(name):
    gen = torch.Generator().manual_seed(4)
    params = _params(name)
    codec = UpdateCodec(codecs.get(name), params)
    w = _state(gen)
    enc = codec.encode(_state(gen), w, None, gen)
    sizes = [math.prod(s) for s in SHAPES.values()]
    assert codecs.get(name).formula(params, sizes) == FORMULAS[name]
    # what Flower counts (the arrays' .npy bytes, their headers and keys, the entries' names)
    sent = enc.arrays.count_bytes() + enc.keys.count_bytes()
    assert sum(len(a.data) for a in enc.arrays.values()) - 128 * len(enc.arrays) == FORMULAS[name]
    assert abs(sent - FORMULAS[name]) <= 0.01 * FORMULAS[name]
    none = 4 * N
    assert sent < none / {"fp16": 1.99, "bf16": 1.99, "uniform8": 3.9, "qsgd": 3.9}.get(name, 30)


def test_integer_entries_travel_as_they_are():
    gen = torch.Generator().manual_seed(5)
    w = OrderedDict(x=torch.randn(100, generator=gen), steps=torch.tensor(7))
    wk = OrderedDict(x=torch.randn(100, generator=gen), steps=torch.tensor(9))
    codec = UpdateCodec(codecs.get("sign"), _params("sign"))
    enc = codec.encode(wk, w, None, gen)
    content = RecordDict({"arrays": enc.arrays, "comm": enc.keys})
    codec.decode(content, w)
    assert list(content["arrays"]) == ["x", "steps"] and int(content["arrays"]["steps"].numpy()) == 9
    assert "comm" not in content
    # a reply with nothing to encode (``local`` shares nothing) travels as it is
    empty = codec.encode(OrderedDict(), w, None, gen)
    assert empty.keys is None and len(empty.arrays) == 0 and empty.residual == {}


def test_dgc_momentum_correction_by_hand():
    """Top-1 of 4 coordinates with m = 0.5 (Lin et al. 2018): V <- m V + d, u = V + e, the
    sent coordinate cleared in e and V; by hand, on a global model of zeros."""
    from fedsim.comm.codecs.topk import TopKParams
    from fedsim.comm.update import VELOCITY

    codec = UpdateCodec(codecs.get("topk"), TopKParams(compressor="topk", density=0.25, momentum_correction=0.5))
    w = OrderedDict(w=torch.zeros(4))

    def step(d, state):
        enc = codec.encode(OrderedDict(w=torch.tensor(d)), w, state, torch.Generator())
        return enc.sent["w"].tolist(), enc.residual[RESIDUAL + "w"].tolist(), enc.residual[VELOCITY + "w"].tolist(), enc

    sent, e, v, enc = step([1.0, 0.2, 0.0, -0.3], None)  # V = d, u = d: sends the 1
    assert sent == pytest.approx([1, 0, 0, 0]) and e == pytest.approx([0, 0.2, 0, -0.3]) and v == e
    # V = 0.5 [0, .2, 0, -.3] + [.1, .2, .45, 0] = [.1, .3, .45, -.15]; u = V + e = [.1, .5, .45, -.45]
    sent, e, v, _ = step([0.1, 0.2, 0.45, 0.0], enc.residual)
    assert sent == pytest.approx([0, 0.5, 0, 0], abs=1e-6)
    assert e == pytest.approx([0.1, 0, 0.45, -0.45], abs=1e-6) and v == pytest.approx([0.1, 0, 0.45, -0.15], abs=1e-6)
    plain = UpdateCodec(codecs.get("topk"), TopKParams(compressor="topk", density=0.25))  # off: u = d + e
    first = plain.encode(OrderedDict(w=torch.tensor([1.0, 0.2, 0.0, -0.3])), w, None, torch.Generator())
    again = plain.encode(OrderedDict(w=torch.tensor([0.1, 0.2, 0.45, 0.0])), w, first.residual, torch.Generator())
    assert again.sent["w"].tolist() == pytest.approx([0, 0, 0.45, 0], abs=1e-6)  # u = [.1, .4, .45, -.3]
    assert not any(k.startswith(VELOCITY) for k in again.residual)


def test_a_reply_of_every_entry_names_them_in_four_bytes_and_a_part_by_name():
    """The names record: {"all": True} (3 + 1 bytes) when the reply encodes the model's
    float entries in its order, else their names; the server rebuilds both."""
    gen = torch.Generator().manual_seed(6)
    codec = UpdateCodec(codecs.get("sign"), _params("sign"))
    w, wk = _state(gen), _state(gen)
    for part in (list(SHAPES), ["fc2.weight", "fc2.bias"]):
        enc = codec.encode(OrderedDict((k, wk[k]) for k in part), w, None, gen)
        assert enc.keys.count_bytes() == (4 if len(part) == 4 else len("keys") + len("fc2.weight") + len("fc2.bias"))
        content = RecordDict({"arrays": enc.arrays, "comm": enc.keys})
        codec.decode(content, w)
        got = content["arrays"]
        assert list(got) == part
        for k in part:  # w + C(u): the scaled sign of the update, sign by sign
            u = wk[k].double() - w[k].double()
            want = (w[k].double() + u.abs().mean() * torch.where(u >= 0, 1.0, -1.0)).float()
            assert torch.equal(torch.from_numpy(got[k].numpy()), want)


def test_dgc_warmup_decays_the_density_exponentially_and_both_sides_use_the_rounds():
    """DGC's warm-up: max(density, 4^-t) in rounds t <= W (25%, 6.25%, 1.5625%, then the
    target), the payload holding that many coordinates a tensor; the server decodes with
    the same round's density, and without warm-up every round is the target's."""
    topk = codecs.get("topk")
    params = _params("topk", density=0.01, warmup_rounds=4)
    assert [topk.at_round(params, t).density for t in range(1, 6)] == [0.25, 0.0625, 0.015625, 0.01, 0.01]
    assert topk.at_round(_params("topk", density=0.01), 1).density == 0.01
    gen = torch.Generator().manual_seed(8)
    codec = UpdateCodec(topk, params)
    w, wk = _state(gen), _state(gen)
    for t, share in [(1, 0.25), (2, 0.0625), (5, 0.01)]:
        enc = codec.encode(wk, w, None, gen, server_round=t)
        k = sum(math.ceil(share * math.prod(s)) for s in SHAPES.values())
        assert len(enc.arrays["@idx"].numpy()) == k
        content = RecordDict({"arrays": enc.arrays, "comm": enc.keys})
        codec.decode(content, w, server_round=t)
        moved = sum(int((torch.from_numpy(content["arrays"][n].numpy()) != w[n]).sum()) for n in SHAPES)
        assert moved == k  # the server's k is the client's: each sent coordinate lands where it was taken
