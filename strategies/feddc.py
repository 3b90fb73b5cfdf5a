"""FedDC (Gao et al. 2022, "FedDC: Federated Learning with Non-IID Data via Local Drift
Decoupling and Correction").

Party i keeps a local drift h_i and a local control variate g_i (zero at first, in
the client-state store); the server keeps the global control variate g and the sum H
of all parties' drifts. From the global model w, party i minimises

    F_i(theta) + alpha/2 ||theta + h_i - w||^2 + <theta, g - g_i>

for K local SGD steps with learning rate lr (the last term corrects every gradient by
g - g_i, as SCAFFOLD does), then updates

    h_i <- h_i + (theta_i - w)                                  (drift)
    g_i <- g_i - g + (w - theta_i) / (a lr)                     (a = K for plain SGD,
                                                                 FedNova's a(K, rho) with momentum)
Server, over the cohort S of the N parties that train (held-out parties never do):

    g <- g + (1/N) sum_{i in S} w_i dg_i,   H <- H + sum_{i in S} (theta_i - w)
    w  = (1/|S|) sum_{i in S} theta_i + H / N

As in Gao et al.'s code, party i uses its weight w_i = n_i / mean(n) over the parties
that train (``weight_list``): alpha_i = alpha / w_i in the penalty, g / w_i in place of
g (in the correction and in g_i's update), and its change dg_i counts w_i times in g;
for equal sizes w_i = 1 and these are the formulas above.

The paper aggregates the drift-corrected models theta_i + h_i of the cohort; with
every party in every round that is the formula above, and with partial
participation fedsim follows the authors' code (all parties' drifts, which the
server tracks without receiving them). The mean over the cohort is uniform, as in the
paper and the code (theta_i and h_i must carry the same weights). Gradients are
clipped to ``max_grad_norm`` (the authors' code clips at 10). Plain SGD only, as the
authors': the control variate divides by lr, and with momentum 0.9 the
drift-augmented model overshoots round after round (MNIST Dir(0.1), 20 rounds: 82%
after round 3, 12% after round 20; without momentum 92%). The terms cover the
trainable parameters; buffers are averaged as in FedAvg.
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

G_KEY = "feddc_g"
DG_KEY = "feddc_dg"


@dataclass
class FedDCParams(StrategyParams):
    alpha: float = hp(
        0.01,
        ge=0,
        help="weight alpha of the drift penalty alpha/2 ||theta + h_i - w||^2",
        source="Gao et al. 2022's code (alpha_coef = 1e-2)",
    )
    max_grad_norm: float = hp(
        10.0,
        ge=0,
        help="clip each step's gradient to this L2 norm (0 = no clipping)",
        source="Gao et al. 2022's code (max_norm = 10, 'to prevent exploding')",
    )


def _split(state: dict[str, torch.Tensor] | None, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in (state or {}).items() if k.startswith(prefix)}


class FedDCRule(ClientRule):
    uses_state = True
    batchable = False
    needs_global = True

    def on_train_begin(self) -> None:
        self.weight = self.ctx.party_weight  # w_i = n_i / mean(n), the authors' weight_list
        self.alpha = float(self.ctx.params.alpha) / self.weight
        self.params = trainable(self.ctx.model)
        g_server = self.ctx.records.get(G_KEY, {})
        h, g_i = _split(self.ctx.state, "h."), _split(self.ctx.state, "g.")
        zeros = lambda p: torch.zeros_like(p)  # noqa: E731
        dev = self.ctx.device
        self.h = {n: h[n].to(dev) if n in h else zeros(p) for n, p in self.params}
        self.g_i = {n: g_i[n].to(dev) if n in g_i else zeros(p) for n, p in self.params}
        # the server's g as this party sees it: g / w_i (the code's global_update_last)
        self.g = {n: g_server[n] / self.weight if n in g_server else zeros(p) for n, p in self.params}
        w = self.ctx.global_state
        # the penalty's centre w - h_i and the correction g - g_i are fixed for the round
        self.centre = {n: w[n] - self.h[n] for n, _ in self.params}
        self.correction = {n: self.g[n] - self.g_i[n] for n, _ in self.params}

    def on_after_backward(self) -> None:
        if self.ctx.params.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in self.params], self.ctx.params.max_grad_norm)

    def loss(self, x, y):
        loss, logits = super().loss(x, y)
        penalty = sum(((p - self.centre[n]) ** 2).sum() for n, p in self.params)
        linear = sum((p * self.correction[n]).sum() for n, p in self.params)
        return loss + 0.5 * self.alpha * penalty + linear, logits

    def on_train_end(self, steps: int) -> RuleOutput:
        w = self.ctx.global_state
        delta = {n: p.detach() - w[n] for n, p in self.params}
        h_new = {n: self.h[n] + delta[n] for n, _ in self.params}
        if steps == 0:
            g_new = dict(self.g_i)
        else:
            scale = 1.0 / (normalizing_factor(steps, self.ctx.momentum) * self.ctx.lr)
            g_new = {n: self.g_i[n] - self.g[n] - delta[n] * scale for n, _ in self.params}
        dg = {n: (g_new[n] - self.g_i[n]) * self.weight for n, _ in self.params}
        state = {**{f"h.{n}": v for n, v in h_new.items()}, **{f"g.{n}": v for n, v in g_new.items()}}
        return RuleOutput(records={DG_KEY: dg}, state=state)


class FedDCServer(FedAvgServer):
    state_attributes = ("g", "drift_sum")

    def __init__(self, params: FedDCParams) -> None:
        super().__init__(params)
        self.g: dict[str, torch.Tensor] | None = None
        self.drift_sum: dict[str, torch.Tensor] | None = None

    def extra_records(self, server_round: int):
        return {G_KEY: state_to_record(self.g)} if self.g else {}

    def aggregate(self, server_round: int, global_state, outcomes: list[ClientOutcome]) -> Aggregate:
        n_parties = self.setup.n_training
        # the paper's uniform mean of the cohort: theta_i and h_i must carry the same
        # weights for theta_i + h_i to be the corrected model
        avg = weighted_average([o.state for o in outcomes], [1.0] * len(outcomes), self.setup.device)
        keys = [k for k, v in global_state.items() if is_float(v) and self.setup.is_param(k)]
        if self.drift_sum is None:
            self.drift_sum = {k: torch.zeros(global_state[k].shape, dtype=torch.float64) for k in keys}
        new: OrderedDict[str, torch.Tensor] = OrderedDict(avg)
        for k in keys:
            w = global_state[k].double()
            self.drift_sum[k] = self.drift_sum[k] + sum(o.state[k].double() - w for o in outcomes)
            new[k] = (avg[k].double() + self.drift_sum[k] / n_parties).to(global_state[k].dtype)
        dgs = [o.records[DG_KEY] for o in outcomes if DG_KEY in o.records]
        if dgs:
            total = weighted_average(dgs, [1.0] * len(dgs))  # mean; times |S| is the sum
            if self.g is None:
                self.g = {k: torch.zeros_like(v) for k, v in total.items()}
            share = len(dgs) / n_parties
            self.g = {k: (self.g[k].double() + share * total[k].double()).to(total[k].dtype) for k in total}
        return Aggregate(new)


@register
class FedDC(Algorithm):
    name = "feddc"
    summary = "local drift variables decouple and correct the local models; SCAFFOLD-style gradient correction"
    paper = "Gao et al. 2022, FedDC: Federated Learning with Non-IID Data via Local Drift Decoupling and Correction"
    Params = FedDCParams
    Rule = FedDCRule
    Server = FedDCServer
    compression_refusal = "the server adds the parties' drifts H += sum (theta_i - w) from the decoded models while each party moves h_i by its true one: with a lossy codec H stops being the sum of the h_i the parties correct by"
    client_dp_refusal = (
        "each client uploads its gradient-correction change dg_i besides the model, unclipped and un-noised"
    )

    def check(self, cfg) -> str | None:
        if cfg.train.optimizer != "sgd":
            return f"strategy 'feddc' needs train.optimizer: sgd (its control variate divides by the SGD learning rate); got '{cfg.train.optimizer}'"
        if cfg.train.momentum != 0:
            return (
                "strategy 'feddc' needs train.momentum: 0, the authors' plain SGD (with momentum 0.9 its drift-augmented "
                f"global model overshoots: 12% on MNIST Dir(0.1) after 20 rounds, README); got {cfg.train.momentum}"
            )
        return None
