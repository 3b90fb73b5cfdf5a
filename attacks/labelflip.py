"""Label flipping (Tolpegin et al. 2020, "Data Poisoning Attacks Against Federated
Learning Systems"): the malicious parties train on relabelled data.

* ``mode: pair``: every sample of ``source_class`` a malicious party holds is
  relabelled ``target_class`` (Tolpegin et al.'s targeted flip; their CIFAR-10 pair is
  dog 5 -> cat 3, the default here);
* ``mode: all``: every label y of a malicious party becomes K - 1 - y (the permutation
  of Karimireddy et al. 2021's and Blades' label-flipping workers).

Success (``attack_success_rate``): pair: the share of source-class test images
predicted as the target; all: the share of test images predicted as K - 1 - y (classes
the permutation leaves in place are left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from strategies.params import hp

from .params import MaliciousParams
from .registry import Attack, register

MODES = ("pair", "all")


@dataclass
class LabelFlipParams(MaliciousParams):
    mode: str = hp(
        "pair", choices=MODES, help="pair: source -> target; all: y -> K - 1 - y", source="Tolpegin et al. 2020 (pair)"
    )
    source_class: int = hp(
        5, ge=0, help="pair: the class relabelled", source="Tolpegin et al. 2020's CIFAR-10 pair (dog)"
    )
    target_class: int = hp(3, ge=0, help="pair: the label it gets", source="Tolpegin et al. 2020's CIFAR-10 pair (cat)")


def flipped(y: torch.Tensor, params: LabelFlipParams, num_classes: int) -> torch.Tensor:
    """The labels ``y`` as the attack relabels them."""
    if params.mode == "all":
        return num_classes - 1 - y
    return torch.where(y == params.source_class, torch.full_like(y, params.target_class), y)


@register
class LabelFlip(Attack):
    name = "label-flip"
    summary = "malicious parties train on flipped labels (source -> target, or y -> K-1-y)"
    paper = "Tolpegin et al. 2020, Data Poisoning Attacks Against Federated Learning Systems"
    Params = LabelFlipParams
    poisons_data = True

    def check(self, cfg) -> str | None:
        p, default = cfg.attack, LabelFlipParams()
        if p.mode == "all" and (p.source_class, p.target_class) != (default.source_class, default.target_class):
            return "config keys 'attack.source_class' and 'attack.target_class' are read only with attack.mode: pair: remove them"
        if p.mode == "pair" and p.source_class == p.target_class:
            return f"attack 'label-flip' flips attack.source_class to attack.target_class; both are {p.source_class}: choose two classes"
        return None

    def check_data(self, params, data) -> str | None:
        if params.mode == "pair":
            for key in ("source_class", "target_class"):
                if getattr(params, key) >= data.num_classes:
                    return f"config key 'attack.{key}' = {getattr(params, key)} is out of range: {data.dataset} has classes 0..{data.num_classes - 1}"
        return None

    def poison_data(self, params, x, y, owned, seed, num_classes):
        y = y.clone()
        for idx in owned.values():
            y[idx] = flipped(y[idx], params, num_classes)
        return x, y

    def success_rate(self, params, predict, x_test, y_test, num_classes):
        target = flipped(y_test, params, num_classes)
        moved = target != y_test
        if not bool(moved.any()):
            return None
        pred = predict(x_test[moved])
        return int((pred.to(target.device) == target[moved]).sum()) / int(moved.sum())
