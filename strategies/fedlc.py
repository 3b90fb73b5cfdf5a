"""FedLC (Zhang et al. 2022, "Federated Learning with Label Distribution Skew via Logits
Calibration").

Client i trains on calibrated logits: with n_c the number of its training samples of
class c and tau the calibration strength,

    loss(z, y) = -log( exp(z_y - tau n_y^{-1/4}) / sum_c exp(z_c - tau n_c^{-1/4}) )

i.e. cross-entropy of ``z - tau n^{-1/4}``. Rare classes get a larger margin, which
counters the bias of a skewed party towards its frequent classes; a class the party
does not hold (n_c = 0) drops out of the softmax (its offset is infinite, as in
FL-bench's implementation), so the party does not push it down. Evaluation uses the
raw logits. ``tau = 0`` is plain cross-entropy (FedAvg). Server: FedAvg.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .params import StrategyParams, hp
from .registry import Algorithm, register
from .rule import ClientRule


@dataclass
class FedLCParams(StrategyParams):
    tau: float = hp(
        1.0,
        ge=0,
        help="calibration strength tau of the offsets tau n_c^{-1/4}",
        source="FL-bench's default (Zhang et al. 2022 tune it per data set)",
    )


def calibration(counts: torch.Tensor, tau: float) -> torch.Tensor:
    """The offsets tau n_c^{-1/4} (inf for a class with n_c = 0 when tau > 0)."""
    counts = counts.to(torch.float32)
    if tau == 0:
        return torch.zeros_like(counts)
    offset = tau * counts.clamp_min(1).pow(-0.25)
    return torch.where(counts > 0, offset, torch.full_like(offset, float("inf")))


def calibrated_loss(logits: torch.Tensor, y: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the calibrated cross-entropy above."""
    return F.cross_entropy(logits.float() - offsets, y)


class FedLCRule(ClientRule):
    batchable = False

    def on_train_begin(self) -> None:
        counts = torch.bincount(self.ctx.train_labels, minlength=self.ctx.num_classes)
        self.offsets = calibration(counts, float(self.ctx.params.tau)).to(self.ctx.device)

    def loss(self, x, y):
        logits = self.ctx.model(x)
        return calibrated_loss(logits, y, self.offsets), logits


@register
class FedLC(Algorithm):
    name = "fedlc"
    summary = "logit calibration by each party's class counts against label skew"
    paper = "Zhang et al. 2022, Federated Learning with Label Distribution Skew via Logits Calibration"
    Params = FedLCParams
    Rule = FedLCRule

    def check(self, cfg) -> str | None:
        if cfg.train.loss != "ce":
            return f"strategy 'fedlc' replaces the loss with calibrated cross-entropy; needs train.loss: ce, got '{cfg.train.loss}'"
        return None
