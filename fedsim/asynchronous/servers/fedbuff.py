"""FedBuff (Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous
Aggregation", AISTATS): the server buffers K updates, then takes one server step.

Each arrival's update Delta_k = w_k - w_{v_k} (its model minus the global model version
it started from) is scaled by its staleness weight s(tau_k) = 1 / sqrt(1 + tau_k)
(the paper's choice) and the buffer is averaged with FedAvg's example weights (FLSim's
``example weighting``, so that the reduction below is exact)::

    Delta = sum_k n_k s(tau_k) Delta_k / sum_k n_k
    m    <- beta m + Delta            (server momentum; m = 0 at the start)
    w    <- w + eta_g m               (server SGD with learning rate eta_g)

With K = concurrency = the cohort, equal durations (tau = 0), eta_g = 1 and beta = 0
this is FedAvg's w + sum_k n_k (w_k - w) / n = sum_k n_k w_k / n (tests/asynchronous).
Entries no arrival carries (a personalised algorithm's personal layers) keep their value.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from fedsim.asynchronous.servers import Arrival, AsyncServer, State, float_keys, keep_integer_max, register
from fedsim.schema.sections import AsyncConfig
from fedsim.util.params import hp

#: eta_g = 1 and beta = 0: the paper's Algorithm 1 with a plain server step, FedAvg's step in the
#: synchronous limit (the reduction below). FLSim's Sent140 configuration (eta_g 0.7, beta 0.9),
#: which the paper tunes per task, did not train on MNIST with 5 local epochs of momentum SGD
#: (27% after 30 steps against 95.8% with these; README "Real data: asynchronous FL on MNIST")
PLAIN_STEP = "Nguyen et al. 2022, Algorithm 1 with a plain server step (eta_g = 1, no momentum)"


@dataclass
class FedBuffParams(AsyncConfig):
    buffer_size: int = hp(10, ge=1, help="K: arrived updates per server step", source="Nguyen et al. 2022 (K = 10)")
    server_lr: float = hp(1.0, gt=0, help="eta_g: the server step's learning rate", source=PLAIN_STEP)
    server_momentum: float = hp(0.0, ge=0, lt=1, help="beta: the server step's momentum", source=PLAIN_STEP)


def staleness_weight(tau: int) -> float:
    """FedBuff's s(tau) = 1 / sqrt(1 + tau)."""
    return 1.0 / math.sqrt(1.0 + tau)


@register
class FedBuff(AsyncServer):
    name = "fedbuff"
    summary = "buffer K updates weighted 1/sqrt(1 + staleness), then a server SGD step with momentum"
    paper = "Nguyen et al. 2022, Federated Learning with Buffered Asynchronous Aggregation"
    Params = FedBuffParams

    def buffer_size(self, params: Any) -> int:
        return int(params.buffer_size)

    def step(self, params: Any, global_state: State, arrivals: list[Arrival], state: dict[str, Any]) -> State:
        total = float(sum(a.outcome.num_examples for a in arrivals))
        delta: dict[str, torch.Tensor] = {}
        # accumulated in float64 in arrival order: the same order every run
        for a in arrivals:
            assert a.outcome.state is not None
            w = a.outcome.num_examples * staleness_weight(a.staleness) / total if total else 0.0
            for key in float_keys(a.outcome.state):
                d = a.outcome.state[key].double() - a.base[key].double()
                delta[key] = delta[key] + w * d if key in delta else w * d
        momentum: dict[str, torch.Tensor] = state.setdefault("momentum", {})
        out: State = OrderedDict((k, v.clone()) for k, v in global_state.items())
        for key, d in delta.items():
            m = params.server_momentum * momentum[key] + d if key in momentum else d
            if params.server_momentum > 0:
                momentum[key] = m
            out[key] = (global_state[key].double() + params.server_lr * m).to(global_state[key].dtype)
        keep_integer_max(out, global_state, arrivals)
        return out
