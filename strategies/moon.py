"""MOON (Li, He and Song 2021, "Model-Contrastive Federated Learning").

Client: the model is encoder -> projection head -> classifier; for a mini-batch x
with projections z (local model), z_glob (the global model received, frozen) and
z_prev^j (the party's previous local models, frozen; up to ``buffer_size``):

    l_con = -log( e^{cos(z, z_glob)/T} / (e^{cos(z, z_glob)/T} + sum_j e^{cos(z, z_prev^j)/T}) )
    loss  = CE(logits, y) + mu * l_con        (mean over the batch)

A party without a previous model (its first round) has no contrastive term. The
previous models live in the client-state store on disk, so memory does not grow
with the number of parties. The frozen models run in eval mode. Server: FedAvg.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .params import StrategyParams, hp
from .registry import Algorithm, register
from .rule import ClientRule, RuleOutput


@dataclass
class MoonParams(StrategyParams):
    mu: float = hp(
        1.0,
        ge=0,
        help="weight mu of the model-contrastive loss l_con",
        source="MOON's code (Li, He and Song 2021; the paper uses 5 on CIFAR-10, 1 on CIFAR-100)",
    )
    temperature: float = hp(
        0.5, gt=0, help="temperature T of the cosine similarities", source="MOON (Li, He and Song 2021)"
    )
    buffer_size: int = hp(1, ge=1, help="previous local models used as negatives", source="MOON (Li, He and Song 2021)")


def contrastive_loss(
    z: torch.Tensor, z_glob: torch.Tensor, z_prevs: list[torch.Tensor], temperature: float
) -> torch.Tensor:
    """MOON's l_con, mean over the batch; 0 when there is no previous model."""
    if not z_prevs:
        return z.new_zeros(())
    pos = F.cosine_similarity(z, z_glob, dim=-1)
    negs = [F.cosine_similarity(z, zp, dim=-1) for zp in z_prevs]
    logits = torch.stack([pos, *negs], dim=1) / temperature  # (B, 1 + P): column 0 is the positive
    target = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    return F.cross_entropy(logits, target)


def _frozen(model: torch.nn.Module, state) -> torch.nn.Module:
    model.load_state_dict(state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class MoonRule(ClientRule):
    uses_state = True
    batchable = False
    needs_global = True

    def on_train_begin(self) -> None:
        hp_ = self.ctx.params
        self.mu, self.temperature, self.buffer_size = float(hp_.mu), float(hp_.temperature), int(hp_.buffer_size)
        self.prev_states = _unpack(self.ctx.state)
        self.global_model = None
        self.prev_models: list[torch.nn.Module] = []
        if self.mu > 0 and self.prev_states:
            self.global_model = _frozen(self.ctx.build_model(), self.ctx.global_state)
            self.prev_models = [_frozen(self.ctx.build_model(), s) for s in self.prev_states]

    def loss(self, x, y):
        _, z, logits = self.ctx.model.forward_all(x)
        loss = self.ctx.criterion(logits, y)
        if self.prev_models:
            with torch.no_grad():
                z_glob = self.global_model.forward_all(x)[1]
                z_prevs = [m.forward_all(x)[1] for m in self.prev_models]
            loss = loss + self.mu * contrastive_loss(z, z_glob, z_prevs, self.temperature)
        return loss, logits

    def on_train_end(self, steps: int) -> RuleOutput:
        current = OrderedDict((k, v.detach().cpu().clone()) for k, v in self.ctx.model.state_dict().items())
        buffer = [current, *self.prev_states][: self.buffer_size]
        return RuleOutput(state=_pack(buffer))


def _pack(states: list) -> dict[str, torch.Tensor]:
    return {f"prev{j}.{k}": v for j, s in enumerate(states) for k, v in s.items()}


def _unpack(flat: dict[str, torch.Tensor] | None) -> list:
    if not flat:
        return []
    out: dict[int, OrderedDict] = {}
    for key, v in flat.items():
        head, _, name = key.partition(".")
        out.setdefault(int(head[4:]), OrderedDict())[name] = v
    return [out[j] for j in sorted(out)]


@register
class Moon(Algorithm):
    name = "moon"
    summary = "model-contrastive loss against the global and previous local projections"
    paper = "Li, He and Song 2021, Model-Contrastive Federated Learning"
    Params = MoonParams
    Rule = MoonRule

    def check(self, cfg) -> str | None:
        if not cfg.model.projection_head:
            return "strategy 'moon' needs model.projection_head: true (its loss compares projections)"
        return None
