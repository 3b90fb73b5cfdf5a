"""In-process replies packed in one vector (issue 34's cross-device path): the same numbers
as the plain records, bit for bit, and the client's fast SGD step equal to torch's."""

import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from flwr.app import Array

from fedsim.client.training import PlainSGD, local_optimizer
from fedsim.measures.heterogeneity import heterogeneity_of_states
from fedsim.schema.sections import TrainConfig
from fedsim.server.evaluation import round_heterogeneity
from fedsim.util.flower_compat import KeptArray, take_tensor
from strategies.arrays import PackedState, Packer, all_finite, record_to_state, state_to_record, weighted_average
from strategies.rounds import ClientOutcome
from strategies.strategy import content_bytes


def _state(seed: int) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        [
            ("conv.weight", torch.randn(4, 3, 3, generator=g)),
            ("conv.bias", torch.randn(4, generator=g)),
            ("bn.running_mean", torch.randn(4, generator=g)),
            ("bn.num_batches_tracked", torch.tensor(seed, dtype=torch.int64)),
            ("fc.weight", torch.randn(2, 4, generator=g)),
        ]
    )


def test_a_kept_record_is_flowers_record_with_its_bytes_made_only_when_read():
    state = _state(0)
    kept, plain = state_to_record(state, keep=True), state_to_record(state)
    arr = kept["conv.weight"]
    assert isinstance(arr, KeptArray) and "_bytes" not in arr.__dict__
    # the byte count without the bytes: what Flower's count_bytes gives for the plain record
    assert content_bytes({"arrays": kept}) == plain.count_bytes()
    assert "_bytes" not in arr.__dict__
    assert kept == plain and arr.data == plain["conv.weight"].data  # now made, bit for bit Flower's
    assert np.array_equal(arr.numpy(), state["conv.weight"].numpy())
    back = pickle.loads(pickle.dumps(arr))  # crosses a process as the plain Array
    assert type(back) is Array and back == plain["conv.weight"]
    # new bytes: the tensor no longer describes them, the server must parse them
    other = state_to_record(state, keep=True)["conv.bias"]
    other.data = plain["conv.bias"].data
    assert take_tensor(other) is None


def test_the_first_reader_gets_the_packed_vector_and_a_second_the_bytes():
    state = _state(1)
    rec = state_to_record(state, keep=True)
    first, second = record_to_state(rec), record_to_state(rec)
    assert isinstance(first, PackedState) and first.packed is not None
    keys, flat = first.packed
    assert keys == ("conv.weight", "conv.bias", "bn.running_mean", "fc.weight")  # float32 entries, in order
    assert torch.equal(flat, torch.cat([state[k].reshape(-1) for k in keys]))
    assert first["conv.bias"].data_ptr() == flat[36:40].data_ptr()  # a view, not a copy
    assert not isinstance(second, PackedState) or second.packed is None
    for k in state:
        assert torch.equal(first[k], state[k]) and torch.equal(second[k], state[k])
    first["fc.weight"] = torch.zeros(2, 4)  # a changed entry: the vector no longer describes the state
    assert first.packed is None


def test_packed_and_plain_states_give_the_same_screen_and_average_bit_for_bit():
    states = [_state(s) for s in range(40)]
    packed = [record_to_state(state_to_record(s, keep=True)) for s in states]
    weights = [float(w) for w in torch.randint(1, 50, (40,), generator=torch.Generator().manual_seed(3))]
    a, b = weighted_average(states, weights), weighted_average(packed, weights)
    for k in a:
        assert torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype
    # the reference: each reply's float64 copy added in order (float32 promoted inside the add is the same)
    total = sum(weights)
    ref = torch.zeros(52, dtype=torch.float64)
    for w, s in zip(weights, states):
        ref.add_(
            torch.cat(
                [s[k].reshape(-1) for k in ("conv.weight", "conv.bias", "bn.running_mean", "fc.weight")]
            ).double(),
            alpha=w / total,
        )
    assert torch.equal(b["fc.weight"].reshape(-1), ref[-8:].float())
    assert all(all_finite(p) for p in packed)
    bad = _state(99)
    bad["fc.weight"][0, 0] = float("nan")
    assert not all_finite(record_to_state(state_to_record(bad, keep=True)))


@pytest.mark.parametrize("k", [5, 40])  # by the Gram matrix (K <= 32) and by two passes
def test_model_heterogeneity_of_packed_replies_equals_the_key_by_key_measures(k):
    g = _state(7)
    states = [_state(s) for s in range(k)]
    agg = weighted_average(states, [1.0] * k)
    outcomes = [
        ClientOutcome(
            party=i, node_id=i, num_examples=1, metrics={}, state=record_to_state(state_to_record(s, keep=True))
        )
        for i, s in enumerate(states)
    ]
    keys = [k for k, v in g.items() if torch.is_floating_point(v)]
    got = round_heterogeneity(g, outcomes, agg)
    want = heterogeneity_of_states(g, states, agg, keys)
    assert set(got) == set(want)
    for k in want:
        assert abs(got[k] - want[k]) <= 1e-5 * max(1.0, abs(want[k])), k


def test_a_packer_reads_the_models_tensors_as_they_are_at_each_record():
    model = torch.nn.Linear(3, 2)
    state = OrderedDict((k, v) for k, v in model.state_dict(keep_vars=True).items())
    packer = Packer(state)
    assert packer.live
    before = record_to_state(packer.record())
    with torch.no_grad():
        model.weight.add_(1.0)
    after = record_to_state(packer.record())
    assert torch.equal(after["weight"], before["weight"] + 1.0)
    assert torch.equal(after["bias"], model.bias.detach())
    assert not Packer(OrderedDict(w=torch.ones(3, 4).t())).live  # a transposed tensor's reshape is a copy


def test_plain_sgd_is_torchs_sgd_bit_for_bit():
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3), torch.nn.Linear(3, 3))
    b = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3), torch.nn.Linear(3, 3))
    b.load_state_dict(a.state_dict())
    cfg = TrainConfig(lr=0.05)
    mine, theirs = local_optimizer(list(a.parameters()), cfg), torch.optim.SGD(b.parameters(), lr=0.05)
    assert isinstance(mine, PlainSGD)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    for _ in range(5):
        for model, opt in ((a, mine), (b, theirs)):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model[:3](x), y).backward()  # the last layer gets no gradient
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not isinstance(local_optimizer(list(a.parameters()), TrainConfig(lr=0.05, momentum=0.9)), PlainSGD)
