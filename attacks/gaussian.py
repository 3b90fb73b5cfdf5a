"""Gaussian noise: each malicious party sends a random direction with the honest
updates' norm,

    d_mal = ||d||_mean g / ||g||,   g ~ N(0, I)

where ||d||_mean is the mean norm of the round's honest updates; g is drawn from
(seed, "attack-gaussian", round, party), so a run repeats and resumes exactly. A
norm-matched random update is not rejected by its length; it only adds noise to a mean.
"""

from __future__ import annotations

import torch

from fedsim.util.seeding import derive

from .registry import Attack, register


@register
class Gaussian(Attack):
    name = "gaussian"
    summary = "send a random update of the honest updates' mean norm"
    paper = "Blanchard et al. 2017 (Gaussian Byzantine workers), norm-matched as in Blades' Noise attack"

    def poisons_replies(self, params) -> bool:
        return True

    def poison_replies(self, params, ctx) -> None:
        norm = float(ctx.honest_updates().norm(dim=1).mean())
        for o in ctx.malicious:
            gen = torch.Generator().manual_seed(derive(ctx.seed, "attack-gaussian", ctx.server_round, o.party))
            g = torch.randn(ctx.space.dim, generator=gen)
            g = g * (norm / float(g.norm())) if float(g.norm()) > 0 else g
            ctx.space.replace(o, g.to(ctx.space.device))
