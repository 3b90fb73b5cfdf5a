"""SCAFFOLD, option II (Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled
Averaging for Federated Learning").

Client k with control variate ``c_k`` (kept in the client-state store, zero at
first) and the server's ``c`` (sent as the ArrayRecord ``scaffold_c``) corrects
every local step: ``y <- y - lr (g(y) + c - c_k)``. After K local steps:

    c_k+ = c_k - c + (w - y) / (K lr),     dc_k = c_k+ - c_k          (plain SGD)

and it replies with ``y`` and ``dc_k`` (ArrayRecord ``scaffold_dc``).
Server over the cohort S of N parties:

    w <- w + lr_g * sum_k p_k (y_k - w)        (p_k = n_k / n, FedAvg's weights)
    c <- c + (|S| / N) * mean_k dc_k

With momentum rho in the local SGD, K is replaced by FedNova's effective number of
steps ``a(K, rho) = [K - rho (1 - rho^K) / (1 - rho)] / (1 - rho)`` (equal to K without
momentum): the corrected gradients pass through the momentum buffer like any
gradient, so ``y`` moves by about ``lr a(K, rho)`` mean corrected gradients and
``(w - y) / (a lr)`` stays the mean gradient that option II estimates. Dividing by K
instead inflates c_k by about 1/(1 - rho) every round, and the run diverges.

The paper's model step averages the deltas uniformly; weighting them by n_k as
NIID-Bench does makes round 1 (all c = 0) equal FedAvg, and both agree when the
parties are of equal size. ``c`` is the mean of all c_k, so its update is a plain
mean scaled by the sampled share |S|/N. Control variates cover the trainable
parameters; buffers (BatchNorm statistics) are averaged as in FedAvg.

With parties of unequal size the fixed point is that of the uniform mean of the
local objectives, (1/N) sum_k F_k, not of the example-weighted one: ``c`` is the
uniform mean of the c_k, and each party's corrected steps follow ``g_k - c_k + c``
(as in NIID-Bench's implementation). With equal sizes both objectives agree.

SGD only: ``(w - y) / (a lr)`` estimates a mean gradient only when ``y`` moved by
SGD steps; under Adam or AdamW it is no gradient estimate (config check). A party
keeps its new c_k only if the server aggregates its reply: a reply dropped as
failed, late or non-finite leaves the party's previous c_k in place, so
``c = mean(c_k)`` keeps holding.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from .arrays import is_float, state_to_record, weighted_average
from .fednova import normalizing_factor
from .params import StrategyParams, hp
from .registry import Algorithm, register
from .rule import ClientRule, RuleOutput, trainable
from .strategy import Aggregate, ClientOutcome, FedAvgServer

C_KEY = "scaffold_c"
DC_KEY = "scaffold_dc"


@dataclass
class ScaffoldParams(StrategyParams):
    server_lr: float = hp(
        1.0,
        gt=0,
        help="global step size eta_g of w += eta_g sum_k p_k (y_k - w)",
        source="Karimireddy et al. 2020 (eta_g = 1 in their experiments)",
    )


class ScaffoldRule(ClientRule):
    uses_state = True
    batchable = False
    needs_global = True

    def on_train_begin(self) -> None:
        self.params = trainable(self.ctx.model)
        server_c = self.ctx.records.get(C_KEY, {})
        state = self.ctx.state or {}
        self.c = {n: server_c[n] if n in server_c else torch.zeros_like(p) for n, p in self.params}
        self.c_i = {n: state[n].to(p.device) if n in state else torch.zeros_like(p) for n, p in self.params}
        # the correction c - c_i is the same for every step of this round
        self.correction = {n: self.c[n] - self.c_i[n] for n, _ in self.params}
        self.active = any(bool(v.abs().sum() > 0) for v in self.correction.values())

    def on_after_backward(self) -> None:
        if not self.active:
            return
        for name, p in self.params:
            if p.grad is not None:
                p.grad.add_(self.correction[name])

    def on_train_end(self, steps: int) -> RuleOutput:
        if steps == 0:
            return RuleOutput(records={DC_KEY: {n: torch.zeros_like(p) for n, p in self.params}})
        g = self.ctx.global_state
        # K for plain SGD; with momentum rho the effective number of steps a(K, rho)
        scale = 1.0 / (normalizing_factor(steps, self.ctx.momentum) * self.ctx.lr)
        c_new = {n: self.c_i[n] - self.c[n] + (g[n] - p.detach()) * scale for n, p in self.params}
        dc = {n: c_new[n] - self.c_i[n] for n, _ in self.params}
        return RuleOutput(records={DC_KEY: dc}, state=c_new)


class ScaffoldServer(FedAvgServer):
    """Server half: corrected model step and the control variate c."""

    state_attributes = ("c",)

    def __init__(self, params: ScaffoldParams) -> None:
        super().__init__(params)
        self.c: dict[str, torch.Tensor] | None = None

    def extra_records(self, server_round: int):
        return {C_KEY: state_to_record(self.c)} if self.c else {}

    def aggregate(self, server_round: int, global_state, outcomes: list[ClientOutcome]) -> Aggregate:
        lr_g = self.params.server_lr
        avg = self.average(outcomes)
        new: OrderedDict[str, torch.Tensor] = OrderedDict()
        for key, gv in global_state.items():
            # the server step applies to parameters; buffers are averaged as in FedAvg
            if is_float(gv) and lr_g != 1.0 and self.setup.is_param(key):
                new[key] = (gv.double() + lr_g * (avg[key].double() - gv.double())).to(gv.dtype)
            else:
                new[key] = avg[key]
        dcs = [o.records[DC_KEY] for o in outcomes if DC_KEY in o.records]
        if dcs:
            share = len(dcs) / len(self.setup.node_of_party)
            mean_dc = weighted_average(dcs, [1.0] * len(dcs))
            if self.c is None:
                self.c = {k: torch.zeros_like(v) for k, v in mean_dc.items()}
            self.c = {k: (self.c[k].double() + share * mean_dc[k].double()).to(mean_dc[k].dtype) for k in mean_dc}
        return Aggregate(new)


@register
class Scaffold(Algorithm):
    name = "scaffold"
    summary = "control variates correct client drift (option II)"
    paper = "Karimireddy et al. 2020, SCAFFOLD: Stochastic Controlled Averaging for Federated Learning"
    Params = ScaffoldParams
    Rule = ScaffoldRule
    Server = ScaffoldServer
    compression_refusal = "its server variate c must stay the mean of the parties' c_i (c += |S|/N mean dc_i), and each c_i moves by (w - y_i)/(K lr) from the party's true model y_i while the server sees a decoded one: a lossy update makes the correction point away from the drift it corrects"
    client_dp_refusal = (
        "each client uploads its control-variate change dc_i besides the model, unclipped and un-noised "
        "(it reveals the client's gradients); use privacy.mode dpsgd"
    )

    def check(self, cfg) -> str | None:
        if cfg.train.optimizer != "sgd":
            return (
                f"strategy 'scaffold' needs train.optimizer: sgd (its control variate (w - y)/(K lr) estimates a "
                f"gradient only under SGD); got '{cfg.train.optimizer}'"
            )
        return None
