"""FedBuff's and FedAsync's server steps and the arrival order, by hand: no run."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch

from fedsim.asynchronous.events import Flight, Schedule, staleness
from fedsim.asynchronous.servers import Arrival, get
from fedsim.asynchronous.servers.fedasync import FedAsyncParams, staleness_factor
from fedsim.asynchronous.servers.fedbuff import FedBuffParams
from strategies.rounds import ClientOutcome


def _arrival(w: list[float], base: list[float], n: int, tau: int) -> Arrival:
    state = OrderedDict(w=torch.tensor(w), steps=torch.tensor(3))
    o = ClientOutcome(party=0, node_id=0, num_examples=n, metrics={}, state=state)
    return Arrival(o, OrderedDict(w=torch.tensor(base), steps=torch.tensor(1)), 0, tau)


def test_fedbuff_weighs_staleness_and_takes_a_momentum_step():
    server, p = get("fedbuff"), FedBuffParams(mode="fedbuff", server_lr=0.5, server_momentum=0.9)
    g = OrderedDict(w=torch.tensor([1.0, 2.0]), steps=torch.tensor(2))
    # deltas (2, -2) (tau 0, n 1) and (4, 0) (tau 3: weight 1/2, n 3): mean (1*2 + 1.5*4, -2) / 4
    arrivals = [_arrival([2.0, 0.0], [0.0, 2.0], 1, 0), _arrival([5.0, 2.0], [1.0, 2.0], 3, 3)]
    state: dict = {}
    one = server.step(p, g, arrivals, state)
    d = torch.tensor([(2.0 + 1.5 * 4.0) / 4, -2.0 / 4])
    assert torch.allclose(one["w"], g["w"] + 0.5 * d)
    assert one["steps"].item() == 3  # an integer entry: the maximum, as FedAvg's
    two = server.step(p, one, arrivals, state)  # m = 0.9 d + d
    assert torch.allclose(two["w"], one["w"] + 0.5 * 1.9 * d)
    assert server.buffer_size(FedBuffParams(mode="fedbuff")) == 10


@pytest.mark.parametrize(
    ("fn", "tau", "want"),
    [
        ("constant", 7, 1.0),
        ("polynomial", 0, 1.0),
        ("polynomial", 3, 4**-0.5),
        ("hinge", 4, 1.0),
        ("hinge", 6, 1 / (10 * 2 + 1)),
    ],
)
def test_fedasync_staleness_functions_are_the_papers(fn, tau, want):
    assert staleness_factor(FedAsyncParams(mode="fedasync", staleness=fn), tau) == pytest.approx(want)


def test_fedasync_mixes_the_arrival_with_a_times_s():
    server = get("fedasync")
    p = FedAsyncParams(mode="fedasync", mixing=0.6, staleness="polynomial", poly_a=0.5)
    g = OrderedDict(w=torch.tensor([1.0, 2.0]), steps=torch.tensor(2))
    out = server.step(p, g, [_arrival([3.0, 0.0], [9.0, 9.0], 5, 3)], {})
    a = 0.6 * 4**-0.5
    assert torch.allclose(out["w"], torch.tensor([(1 - a) * 1 + a * 3, (1 - a) * 2]))
    assert server.buffer_size(p) == 1


def test_arrivals_pop_in_time_then_party_then_dispatch_order():
    sched = Schedule()
    for party, dispatch, t in [(3, 1, 5.0), (1, 2, 2.0), (2, 3, 2.0), (1, 4, 9.0), (0, 5, math.inf)]:
        f = Flight(party, dispatch, 0.0, 0)
        f.arrival_s = t
        sched.add(f)
    assert sched.parties() == {0, 1, 2, 3}
    assert [(f.party, f.dispatch) for f in sched.flights()] == [(1, 2), (2, 3), (3, 1), (1, 4), (0, 5)]
    assert [sched.pop().party for _ in range(5)] == [1, 2, 3, 1, 0]
    assert staleness(7, 3) == 4 and staleness(2, 2) == 0
