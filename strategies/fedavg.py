"""FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data").

Server: ``w+ = sum_k (n_k / n) w_k`` over the cohort's replies, n_k the party's number
of training examples and n their sum, accumulated in float64 in party order; integer
buffers (``num_batches_tracked``) take the maximum, never a float average (see
:mod:`strategies.arrays`). Client: plain local SGD on ``train.*``.
"""

from __future__ import annotations

from .registry import Algorithm, register


@register
class FedAvg(Algorithm):
    name = "fedavg"
    summary = "weighted average of the client models"
    paper = "McMahan et al. 2017, Communication-Efficient Learning of Deep Networks from Decentralized Data"
