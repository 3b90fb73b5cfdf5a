"""``privacy.mode: dpsgd``: sample-level DP, every party trains with DP-SGD (Opacus).

Per-sample gradients of the task loss, clipped and noised (:mod:`fedsim.privacy.dpsgd`),
then the rule's parameter penalty (FedProx's proximal term), which reads no data. Rules
that change gradients or the loss through the model (not ``batchable``) and the
personalised algorithms' own local loops run outside that trainer and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedsim.privacy.modes import AccountedMode, AccountedParams, register
from fedsim.util.params import hp

ABADI = "Abadi et al. 2016, Deep Learning with Differential Privacy (DP-SGD); Opacus"


@dataclass
class DPSGDParams(AccountedParams):
    """``privacy.*`` with ``dpsgd``: the accounting keys and the per-sample clipping norm."""

    max_grad_norm: float = hp(1.0, gt=0, help="each per-sample gradient is clipped to this norm", source=ABADI)


@register
class DPSGD(AccountedMode):
    name = "dpsgd"
    summary = "sample-level DP: every party trains with Opacus (Poisson batches, per-sample clipping, noise)"
    paper = ABADI
    Params = DPSGDParams
    per_sample = True

    def refuse(self, cfg: Any, algorithm: Any) -> str | None:
        problem = super().refuse(cfg, algorithm)
        name = cfg.strategy.name
        if problem:
            return problem
        if getattr(algorithm, "personal", False):
            return (
                f"privacy.mode 'dpsgd' cannot train personalised strategy '{name}': its own local steps (some layers "
                "at a time, a personal model beside the global one, an inner solver) run outside the DP-SGD trainer; "
                "a client-level mode (central-*, client-*) privatises the layers it shares"
            )
        if not algorithm.Rule.batchable:
            return (
                f"privacy.mode 'dpsgd' cannot train strategy '{name}': its client rule changes gradients or the loss "
                "through the model (hooks, per-party state, extra forward passes), which Opacus's per-sample clipping "
                "does not cover; DP-SGD runs the task loss plus a parameter penalty (fedavg, fedprox, fednova, "
                "Flower's strategies)"
            )
        if cfg.train.amp:
            return "privacy.mode 'dpsgd' trains in float32: remove train.amp"
        if cfg.model.name.startswith("resnet"):
            return (
                f"privacy.mode 'dpsgd' cannot train {cfg.model.name}: torchvision's residual blocks add the shortcut "
                "in place onto layer outputs that Opacus's per-sample hooks wrap, which autograd forbids; use "
                "simple-cnn, mlp or another model (client-level modes run ResNets with model.norm=group)"
            )
        return None
