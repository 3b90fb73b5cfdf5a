"""A pixel-pattern backdoor (Bagdasaryan et al. 2020, "How To Backdoor Federated
Learning"; the trigger and rates of Xie et al. 2020's DBA code for MNIST).

A share ``poison_fraction`` of each malicious party's images, drawn once from (seed,
"backdoor", party), gets the trigger stamped and is relabelled ``target_class``; the
party trains on them with its clean images. The trigger is DBA's global MNIST
pattern: four bars of 1 x 4 white pixels at rows 0 and 3, columns 0-3 and 6-9 of the
top-left corner (every channel set to 255 before normalisation).

``boost`` gamma > 1 adds Bagdasaryan et al.'s model replacement: the malicious reply
is w + gamma (w_mal - w); gamma = n / eta (n replies, server learning rate eta = 1)
makes the average become the backdoored model.

Success (``attack_success_rate``): the share of triggered test images of the other
classes that the model classifies as ``target_class``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedsim.util.seeding import derive
from strategies.params import hp

from .params import MaliciousParams
from .registry import Attack, register

#: (row, column) of the trigger's pixels: DBA's four 1 x 4 bars with a gap of 2
TRIGGER = tuple((r, c) for r in (0, 3) for c in (*range(0, 4), *range(6, 10)))
TRIGGER_HEIGHT, TRIGGER_WIDTH = 4, 10


def stamp(x: torch.Tensor) -> torch.Tensor:
    """Images ``x`` (uint8, (N, C, H, W)) with the trigger stamped (a new tensor)."""
    out = x.clone()
    rows = torch.tensor([r for r, _ in TRIGGER], device=x.device)
    cols = torch.tensor([c for _, c in TRIGGER], device=x.device)
    out[:, :, rows, cols] = 255
    return out


@dataclass
class BackdoorParams(MaliciousParams):
    target_class: int = hp(
        2, ge=0, help="the label of triggered images", source="DBA's MNIST setting (poison_label_swap: 2)"
    )
    poison_fraction: float = hp(
        0.3125,
        gt=0,
        le=1,
        help="share of each malicious party's images stamped and relabelled",
        source="DBA and Bagdasaryan et al.: 20 poisoned images per batch of 64",
    )
    boost: float = hp(
        1.0,
        ge=1,
        help="gamma of model replacement: the reply is w + gamma (w_mal - w); 1 = plain data poisoning",
        source="Bagdasaryan et al. 2020 (gamma = n / eta for replacement)",
    )


@register
class Backdoor(Attack):
    name = "backdoor"
    summary = "a pixel trigger on a share of the malicious parties' images, relabelled to the target"
    paper = "Bagdasaryan et al. 2020, How To Backdoor Federated Learning"
    Params = BackdoorParams
    poisons_data = True

    def check_data(self, params, data) -> str | None:
        if not data.is_image:
            return f"attack 'backdoor' stamps a pixel trigger on images; data set {data.dataset!r} has no images"
        h, w = data.input_shape[1], data.input_shape[2]
        if h < TRIGGER_HEIGHT or w < TRIGGER_WIDTH:
            return f"attack 'backdoor' needs images of at least {TRIGGER_HEIGHT} x {TRIGGER_WIDTH} pixels for its trigger; {data.dataset!r} has {h} x {w}"
        if params.target_class >= data.num_classes:
            return f"config key 'attack.target_class' = {params.target_class} is out of range: {data.dataset} has classes 0..{data.num_classes - 1}"
        return None

    def poisoned_rows(self, params, owned, seed) -> torch.Tensor:
        """The dataset rows that carry the trigger: a share of each malicious party's."""
        rows = []
        for party, idx in sorted(owned.items()):
            k = int(round(params.poison_fraction * idx.numel()))
            pick = np.random.default_rng(derive(seed, "backdoor", party)).choice(idx.numel(), size=k, replace=False)
            rows.append(idx[torch.from_numpy(np.sort(pick)).to(idx.device)])
        return torch.cat(rows) if rows else torch.zeros(0, dtype=torch.int64)

    def poison_data(self, params, x, y, owned, seed, num_classes):
        rows = self.poisoned_rows(params, owned, seed).to(x.device)
        x, y = x.clone(), y.clone()
        x[rows] = stamp(x[rows])
        y[rows] = params.target_class
        return x, y

    def poisons_replies(self, params) -> bool:
        return params.boost != 1.0

    def poison_replies(self, params, ctx) -> None:
        for o in ctx.malicious:
            ctx.space.replace(o, params.boost * ctx.space.vector(o.state))

    def success_rate(self, params, predict, x_test, y_test, num_classes):
        others = y_test != params.target_class
        if not bool(others.any()):
            return None
        pred = predict(stamp(x_test[others]))
        return int((pred == params.target_class).sum()) / int(others.sum())
