"""FedAsync (Xie, Koyejo, Gupta 2019, "Asynchronous Federated Optimization"): every
arrival is a server step that mixes the arrived model into the global one::

    w <- (1 - a_t) w + a_t w_k,    a_t = a x s(t - tau)

t - tau being the arrival's staleness (server version at arrival - the version it
started from) and s one of the paper's staleness functions (its Section 5.2):

* constant: s = 1;
* polynomial: s_a(x) = (x + 1)^(-a);
* hinge: s_{a,b}(x) = 1 if x <= b, else 1 / (a (x - b) + 1).

Defaults are the paper's experiments' (a = 0.6 of its alpha in {0.4, 0.6, 0.8}; Poly
with a = 0.5; Hinge with a = 10, b = 4). With a = 1 and concurrency 1 (no staleness) the
run is sequential training on the parties in arrival order (tests/asynchronous).
Entries no arrival carries (a personalised algorithm's personal layers) keep their value.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fedsim.asynchronous.servers import Arrival, AsyncServer, State, float_keys, keep_integer_max, register
from fedsim.schema.sections import AsyncConfig
from fedsim.util.params import hp

XIE = "Xie, Koyejo, Gupta 2019, Asynchronous Federated Optimization (its experiments)"


@dataclass
class FedAsyncParams(AsyncConfig):
    mixing: float = hp(0.6, gt=0, le=1, help="a: the mixing weight of an arrival with no staleness", source=XIE)
    staleness: str = hp(
        "polynomial", choices=("constant", "polynomial", "hinge"), help="the staleness function s", source=XIE
    )
    poly_a: float = hp(0.5, gt=0, help="a of polynomial s(x) = (x + 1)^(-a)", source=XIE)
    hinge_a: float = hp(10.0, gt=0, help="a of hinge s(x) = 1 / (a (x - b) + 1) past b", source=XIE)
    hinge_b: int = hp(4, ge=0, help="b of hinge: staleness up to b weighs 1", source=XIE)


def staleness_factor(params: Any, tau: int) -> float:
    """s(tau) of the chosen staleness function (module docstring)."""
    if params.staleness == "constant":
        return 1.0
    if params.staleness == "polynomial":
        return float((tau + 1.0) ** (-params.poly_a))
    return 1.0 if tau <= params.hinge_b else 1.0 / (params.hinge_a * (tau - params.hinge_b) + 1.0)


@register
class FedAsync(AsyncServer):
    name = "fedasync"
    summary = "mix each arrival into the global model, w <- (1 - a s(staleness)) w + a s(staleness) w_k"
    paper = "Xie, Koyejo, Gupta 2019, Asynchronous Federated Optimization"
    Params = FedAsyncParams

    def step(self, params: Any, global_state: State, arrivals: list[Arrival], state: dict[str, Any]) -> State:
        out: State = OrderedDict((k, v.clone()) for k, v in global_state.items())
        for a in arrivals:  # one arrival a step (buffer_size 1)
            assert a.outcome.state is not None
            at = params.mixing * staleness_factor(params, a.staleness)
            for key in float_keys(a.outcome.state):
                w = out[key]
                mixed = (1.0 - at) * w.double() + at * a.outcome.state[key].double()
                out[key] = mixed.to(w.dtype)
        keep_integer_max(out, global_state, arrivals)
        return out
