"""FedAvg's weighted average of known arrays, integer buffers, Flower records."""

from collections import OrderedDict

import numpy as np
import torch

from strategies.arrays import record_to_state, restore_dtypes, state_to_record, weighted_average


def _state(w, b, nbt):
    return OrderedDict(
        [
            ("w", torch.tensor(w, dtype=torch.float32)),
            ("bn.running_mean", torch.tensor(b, dtype=torch.float32)),
            ("bn.num_batches_tracked", torch.tensor(nbt, dtype=torch.int64)),
        ]
    )


def test_fedavg_of_known_arrays_weighted_by_examples():
    s1 = _state([1.0, 2.0], [0.0, 4.0], 10)
    s2 = _state([3.0, 6.0], [2.0, 0.0], 30)
    avg = weighted_average([s1, s2], [100, 300])
    # p = (0.25, 0.75)
    assert torch.allclose(avg["w"], torch.tensor([0.25 * 1 + 0.75 * 3, 0.25 * 2 + 0.75 * 6]))
    assert torch.allclose(avg["bn.running_mean"], torch.tensor([1.5, 1.0]))
    assert avg["w"].dtype == torch.float32
    # integer buffers are not averaged as floats: a step counter takes the max
    assert avg["bn.num_batches_tracked"].dtype == torch.int64
    assert int(avg["bn.num_batches_tracked"]) == 30


def test_equal_weights_is_the_mean_and_order_is_fixed():
    states = [_state([float(i), 1.0], [0.0, 0.0], i) for i in range(5)]
    avg = weighted_average(states, [1] * 5)
    assert torch.allclose(avg["w"], torch.tensor([2.0, 1.0]))


def test_a_kept_record_hands_its_tensors_once_and_reads_like_any_other():
    model = _state([1.5, -2.0], [0.1, 0.2], 7)
    rec = state_to_record(model, keep=True)
    plain = state_to_record(model)
    assert rec == plain  # the same Flower record, bytes and all
    model["w"].add_(1.0)  # the client's model trains on: the reply keeps what it sent
    first, second = record_to_state(rec), record_to_state(rec)
    for k in first:
        assert torch.equal(first[k], second[k]) and first[k].dtype == second[k].dtype
        assert first[k].data_ptr() != second[k].data_ptr()  # each reader owns its tensors
    assert torch.equal(first["w"], torch.tensor([1.5, -2.0]))


def test_record_roundtrip_and_restore_dtypes():
    s = _state([1.5, -2.0], [0.1, 0.2], 7)
    back = record_to_state(state_to_record(s))
    for k in s:
        assert torch.equal(back[k], s[k])
    # Flower's numpy aggregation turns counters into float64: restore_dtypes puts them back
    f64 = OrderedDict((k, v.double()) for k, v in s.items())
    f64["bn.num_batches_tracked"] = torch.tensor(6.6, dtype=torch.float64)
    fixed = restore_dtypes(f64, s)
    assert fixed["w"].dtype == torch.float32
    assert fixed["bn.num_batches_tracked"].dtype == torch.int64 and int(fixed["bn.num_batches_tracked"]) == 7
    assert np.allclose(fixed["w"].numpy(), [1.5, -2.0])
