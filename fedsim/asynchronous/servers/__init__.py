"""Asynchronous servers (``asynchronous.mode``): plug-ins that turn arrived updates into
a server step.

A server is one file of this package (found on first use: no import line anywhere)
with an :class:`AsyncServer` subclass decorated with :func:`register`. Its ``Params``
subclasses :class:`fedsim.schema.sections.AsyncConfig` (``mode`` and ``concurrency``,
every server's) and declares its own keys with ``hp``. The event loop
(:mod:`fedsim.asynchronous.loop`) hands it, every :meth:`AsyncServer.buffer_size`
arrivals, the arrived updates (:class:`Arrival`: the reply, the model version it started
from and its staleness) and the current global model; :meth:`AsyncServer.step` returns
the next global model. ``state`` is the server's own state (FedBuff's momentum), kept
in the checkpoint.

Async composes with an algorithm's *client half* only: the server step replaces the
algorithm's aggregate, so an algorithm whose server is not FedAvg's mean of the replies
(its own server state, weights or arrays: SCAFFOLD, FedDyn, FedDC, FedNova, the robust
aggregators, q-FFL, the FedOpt family, pFedMe's mixing) is refused, as are client-level
differential privacy (its accounting assumes a Poisson cohort per round), DP-SGD (its
accountant counts synchronous rounds), attacks and defences (they act on a round's
cohort), a round deadline and over-selection (there are no rounds to end).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

import strategies
from fedsim.privacy.compat import asynchronous_refusal
from fedsim.schema.sections import AsyncConfig
from fedsim.util.plugins import Plugin, Registry
from strategies.registry import Algorithm
from strategies.rounds import ClientOutcome
from strategies.strategy import FedAvgServer

State = OrderedDict[str, torch.Tensor]


@dataclass
class Arrival:
    """One update as the server step sees it: the decoded reply, the global model it
    was trained from (version ``version``) and its staleness tau = server version at
    arrival - ``version``."""

    outcome: ClientOutcome
    base: Mapping[str, torch.Tensor]
    version: int
    staleness: int


class AsyncServer(Plugin):
    """One asynchronous server (module docstring)."""

    Params: type = AsyncConfig
    #: whether this mode runs the event loop (``off``: synchronous rounds)
    asynchronous: bool = True

    def buffer_size(self, params: Any) -> int:
        """Arrivals per server step (FedAsync: 1)."""
        return 1

    def step(self, params: Any, global_state: State, arrivals: list[Arrival], state: dict[str, Any]) -> State:
        """The next global model from the arrived updates (``state``: the server's own,
        changed in place and checkpointed)."""
        raise NotImplementedError

    def check(self, cfg: Any) -> str | None:
        if not self.asynchronous:
            return None
        return refusal(cfg, self.name)


def algorithm_refusal(algo: Algorithm) -> str | None:
    """Why ``algo``'s server half cannot be replaced by an asynchronous server step, or None:
    only FedAvg's own server (the mean of the replies, no state, nothing sent besides the
    model) can, which every algorithm whose difference is its client rule keeps."""
    plain = algo.Server is FedAvgServer and type(algo).server is Algorithm.server and not algo.robust
    if plain:
        return None
    server = algo.Server.__name__ if type(algo).server is Algorithm.server else f"{algo.name}'s own server"
    return (
        f"its server half ({server}) is not FedAvg's mean of the replies (server state, weights or arrays "
        "of its own that an asynchronous step would drop)"
    )


def refusal(cfg: Any, mode: str) -> str | None:
    """Why the rest of ``cfg`` cannot run asynchronously (module docstring), or None."""
    head = f"asynchronous.mode {mode}"
    why = algorithm_refusal(strategies.get(cfg.strategy.name))
    if why:
        return f"{head} with strategy '{cfg.strategy.name}': {why}; use fedavg, fedprox or a personalised algorithm"
    if cfg.system.source == "none":
        return f"{head} needs the simulated clock for arrival times: set system.source (synthetic, fedscale, file)"
    deadline = cfg.system.round_deadline
    if (deadline is not None and deadline != float("inf")) or cfg.system.over_selection != 1:
        return f"{head}: system.round_deadline and system.over_selection end synchronous rounds; leave them unset"
    why = asynchronous_refusal(cfg, mode)  # the privacy package says what its modes assume
    if why:
        return why
    if cfg.attack.name != "none" or cfg.defence.name != "none":
        return f"{head}: attacks and defences act on a synchronous round's cohort of replies; use none"
    if cfg.selection.name != "uniform":
        return (
            f"{head} with selection.name {cfg.selection.name}: the loop gives each free slot to a party drawn "
            "uniformly among those online, not a round's cohort a selector picks; use selection.name uniform"
        )
    if cfg.comm.downlink:
        return (
            f"{head} with comm.downlink: the compressed broadcast charges each party the rounds' updates since it "
            "was last current, which an asynchronous run (a model version a server step) does not have; "
            "set comm.downlink false"
        )
    return None


#: the asynchronous servers: the modules of fedsim/asynchronous/servers, listed in this order
ASYNC_SERVERS: Registry[AsyncServer] = Registry(
    "asynchronous server",
    "fedsim.asynchronous.servers",
    section="asynchronous",
    chooser="mode",
    base=AsyncConfig,
    ordered=True,
    first=("off", "fedbuff", "fedasync"),
)


def register(cls: type[AsyncServer]) -> type[AsyncServer]:
    """Class decorator: make a server available to ``asynchronous.mode``."""
    return ASYNC_SERVERS.register(cls)


def get(name: str) -> AsyncServer:
    return ASYNC_SERVERS.get(name)


def float_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point()]


def keep_integer_max(out: State, global_state: State, arrivals: list[Arrival]) -> None:
    """Integer entries (BatchNorm's ``num_batches_tracked``) take the maximum of the
    global value and the arrivals', as FedAvg's mean does (``strategies/arrays.py``)."""
    for key, value in global_state.items():
        if not value.is_floating_point():
            vals = [a.outcome.state[key] for a in arrivals if a.outcome.state is not None and key in a.outcome.state]
            out[key] = torch.stack([value, *[v.to(value.dtype) for v in vals]]).max(dim=0).values


__all__ = ["ASYNC_SERVERS", "Arrival", "AsyncServer", "State", "algorithm_refusal", "get", "refusal", "register"]
