"""q-FFL (Li et al. 2020, "Fair Resource Allocation in Federated Learning"): q-FedAvg
through Flower's own ``QFedAvg``.

q-FFL minimises sum_k p_k F_k^(q+1) / (q+1): the larger q, the more the parties with a
high loss weigh, and the more uniform the accuracy over parties. q-FedAvg (the paper's
Algorithm 3), from the cohort's local models w_k and losses F_k::

    dw_k = L (w - w_k),   delta_k = F_k^q dw_k,   h_k = q F_k^(q-1) ||dw_k||^2 + L F_k^q
    w+   = w - sum_k delta_k / sum_k h_k

L is the Lipschitz constant of the gradient, estimated as in the paper by L = 1/eta with
eta the local learning rate (``strategy.lipschitz`` 0, the default, takes
1/``train.lr``). With q = 0 every h_k is L and w+ is the plain mean of the w_k: FedAvg
with equal weights (fedsim's FedAvg weighs by examples; the two agree when the parties
hold equally many), whatever L.

F_k is F_k(w^t) as in the paper: the loss of the received global model on the party's
training data before local training, which the train config asks each party for
(``global-loss``; one forward pass over its data) and which it replies as the metric
``global_loss``, the key Flower's ``QFedAvg`` reads here (``train_loss_key``; Flower's
default, ``train_loss``, is the mean loss during local training, after the party has
already moved towards its own optimum). The step runs on the trainable parameters;
buffers (BatchNorm statistics) are averaged as in FedAvg (``ServerOptimizer``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from flwr.serverapp import strategy as fs

from .builtins import ServerOptimizer
from .params import StrategyParams, hp
from .registry import Algorithm, register


@dataclass
class QFFLParams(StrategyParams):
    q: float = hp(
        1.0,
        ge=0,
        help="fairness q: 0 is FedAvg with equal weights, larger evens out the parties' losses",
        source="Li et al. 2020 (q in {1, 5} and more per data set; Flower's default 0.1)",
    )
    lipschitz: float = hp(
        0.0,
        ge=0,
        help="Lipschitz estimate L of q-FedAvg's step; 0: 1/train.lr",
        source="Li et al. 2020 (L = 1/eta, eta the local learning rate; Flower's QFedAvg)",
    )


class QFFLServer(ServerOptimizer, fs.QFedAvg):
    """Flower's QFedAvg on the trainable parameters; buffers averaged as in FedAvg; F_k
    the parties' ``global_loss`` (the received model's loss before training)."""

    asks_global_loss = True


@register
class QFFL(Algorithm):
    name = "qffl"
    summary = "q-FedAvg: the parties with a high loss weigh more (fairness q)"
    paper = "Li et al. 2020, Fair Resource Allocation in Federated Learning"
    Params = QFFLParams
    client_dp_refusal = (
        "q-FedAvg weighs each update by its party's reported loss; the Gaussian mechanism's sensitivity "
        "C / (qN) bounds the plain mean only"
    )

    def resolve(self, params, cfg):
        if params.lipschitz > 0:
            return params, []
        lipschitz = 1.0 / cfg.train.lr
        return dataclasses.replace(params, lipschitz=lipschitz), [
            f"qffl: L = 1/train.lr = {lipschitz:g} (Li et al. 2020)"
        ]

    def server(self, p):
        lipschitz = p.lipschitz if p.lipschitz > 0 else 1.0
        return QFFLServer(p, client_learning_rate=1.0 / lipschitz, q=p.q, train_loss_key="global_loss")
