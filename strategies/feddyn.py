"""FedDyn (Acar et al. 2021, "Federated Learning Based on Dynamic Regularization").

Client k keeps g_k, the gradient of its local loss at its last local model (zero at
first, in the client-state store), and solves, from the global model theta:

    theta_k = argmin  L_k(theta) - <g_k, theta> + alpha_k/2 ||theta - theta^{t-1}||^2
    g_k    <- g_k - alpha_k (theta_k - theta^{t-1})

with the authors' per-party coefficient alpha_k = alpha / w_k, w_k = n_k / mean(n) over
the parties that train (``alpha_coef_adpt`` in Acar et al.'s code; alpha_k = alpha for
equal sizes). Server, over the cohort P of the m parties that train (held-out parties
never do), with state h (zero at first):

    h       <- h - alpha (1/m) sum_{k in P} (theta_k - theta^{t-1})
    theta^t  = sum_{k in P} p_k theta_k - h / alpha

h / alpha is minus the mean over all m parties of their accumulated updates, which is
what the authors' server adds (``np.mean(local_param_list)``) whatever each alpha_k.
The paper and the code average the cohort uniformly; fedsim weights it by examples
(p_k = n_k / n, FedAvg's weights), which is their mean for equal party sizes.
At ``alpha = 0`` the regulariser is switched off (g_k and h stay 0 and the
``h / alpha`` term is dropped), which is FedAvg (with ``max_grad_norm = 0``).
Clipping follows the authors' code: each step's gradient of the task loss and the
linear term, grad L_k - g_k - alpha_k theta^{t-1}, is clipped at norm 10, and the
quadratic's alpha_k theta (their optimiser's weight decay) is added after the clip.
The terms cover the trainable parameters; buffers are averaged as in FedAvg.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from .arrays import is_float
from .params import StrategyParams, hp
from .registry import Algorithm, register
from .rule import ClientRule, RuleOutput, trainable
from .strategy import Aggregate, ClientOutcome, FedAvgServer


@dataclass
class FedDynParams(StrategyParams):
    alpha: float = hp(
        0.01,
        ge=0,
        help="weight alpha of the dynamic regulariser (0 = FedAvg)",
        source="Acar et al. 2021's code (alpha_coef = 1e-2); the paper tries {0.1, 0.01, 0.001}",
    )
    max_grad_norm: float = hp(
        10.0,
        ge=0,
        help="clip each step's gradient to this L2 norm (0 = no clipping)",
        source="Acar et al. 2021's code (max_norm = 10)",
    )


class FedDynRule(ClientRule):
    uses_state = True
    batchable = False
    needs_global = True

    def on_train_begin(self) -> None:
        self.alpha = float(self.ctx.params.alpha) / self.ctx.party_weight  # alpha_k
        state = self.ctx.state or {}
        g = self.ctx.global_state
        self.triples = [
            (n, p, g[n], state[n].to(p.device) if n in state else torch.zeros_like(p))
            for n, p in trainable(self.ctx.model)
        ]

    def loss(self, x, y):
        loss, logits = super().loss(x, y)
        if self.alpha > 0:
            linear = sum((p * gk).sum() for _, p, _, gk in self.triples)
            quadratic = sum(((p - w) ** 2).sum() for _, p, w, _ in self.triples)
            loss = loss - linear + 0.5 * self.alpha * quadratic
        return loss, logits

    def on_after_backward(self) -> None:
        if self.ctx.params.max_grad_norm <= 0:
            return
        # the authors clip grad L_k - g_k - alpha_k w and add alpha_k theta after the clip
        # (their optimiser's weight decay): the quadratic's alpha_k theta leaves the clip
        params = [p for _, p, _, _ in self.triples if p.grad is not None]
        if self.alpha > 0:
            for p in params:
                p.grad.sub_(p.detach(), alpha=self.alpha)
        torch.nn.utils.clip_grad_norm_(params, self.ctx.params.max_grad_norm)
        if self.alpha > 0:
            for p in params:
                p.grad.add_(p.detach(), alpha=self.alpha)

    def on_train_end(self, steps: int) -> RuleOutput:
        new = {n: gk - self.alpha * (p.detach() - w) for n, p, w, gk in self.triples}
        return RuleOutput(state=new if self.alpha > 0 else None)


class FedDynServer(FedAvgServer):
    state_attributes = ("h",)

    def __init__(self, params: FedDynParams) -> None:
        super().__init__(params)
        self.h: dict[str, torch.Tensor] | None = None

    def aggregate(self, server_round: int, global_state, outcomes: list[ClientOutcome]) -> Aggregate:
        avg = self.average(outcomes)
        alpha = self.params.alpha
        if alpha == 0:
            return Aggregate(avg)
        m = self.setup.n_training
        keys = [k for k, v in global_state.items() if is_float(v) and self.setup.is_param(k)]
        if self.h is None:
            self.h = {k: torch.zeros(global_state[k].shape, dtype=torch.float64) for k in keys}
        new: OrderedDict[str, torch.Tensor] = OrderedDict(avg)
        for k in keys:
            w = global_state[k].double()
            update_sum = sum(o.state[k].double() - w for o in outcomes)
            self.h[k] = self.h[k] - alpha / m * update_sum
            new[k] = (avg[k].double() - self.h[k] / alpha).to(global_state[k].dtype)
        return Aggregate(new)


@register
class FedDyn(Algorithm):
    name = "feddyn"
    summary = "dynamic regulariser aligns local and global stationary points"
    paper = "Acar et al. 2021, Federated Learning Based on Dynamic Regularization"
    Params = FedDynParams
    Rule = FedDynRule
    Server = FedDynServer
    compression_refusal = "its server state h and the parties' g_k are two halves of one dual variable (h = -alpha mean_k g_k): a party moves g_k by its true update, the server moves h by the decoded one, and a lossy codec lets them drift apart without bound"
