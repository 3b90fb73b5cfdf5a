"""Client-level DP-FedAvg: ``central-fixed``, ``central-adaptive``, ``client-fixed``, ``client-adaptive``.

Each round the server draws a Poisson cohort, each update is clipped to C (by the
server, or by Flower's clipping mods in the clients), and the server releases the
noised mean (:mod:`fedsim.privacy.central`). That is differentially private when the
server depends on the replies only through their mean: an algorithm that does not
declares why in ``Algorithm.client_dp_refusal`` and is refused. Personalised
algorithms send only their shared entries, which the server clips and noises;
Flower's client-side mods clip whole models, so ``client-*`` refuses personal layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod

from fedsim.privacy.compat import count_stddev, expected_cohort
from fedsim.privacy.modes import AccountedMode, AccountedParams, Mod, register
from fedsim.util.params import hp

MCMAHAN = "McMahan et al. 2018, Learning Differentially Private Recurrent Language Models (DP-FedAvg)"
ANDREW = "Andrew et al. 2021, Differentially Private Learning with Adaptive Clipping"


@dataclass
class ClientLevelParams(AccountedParams):
    """``privacy.*`` of a client-level mode: the accounting keys and the clipping norm."""

    clipping_norm: float = hp(
        0.1, gt=0, help="C: each update w_k - w is clipped to this norm (the adaptive modes' initial C)", source=MCMAHAN
    )


@dataclass
class AdaptiveParams(ClientLevelParams):
    """``privacy.*`` of an adaptive mode: C follows a quantile of the update norms."""

    target_quantile: float = hp(
        0.5, ge=0, le=1, help="the share of updates left unclipped that C tracks", source=ANDREW
    )
    clip_lr: float = hp(0.2, gt=0, help="the geometric learning rate of C", source=ANDREW)
    clipped_count_stddev: float | None = hp(
        None,
        gt=0,
        help="the std of the noised count of unclipped updates",
        source="null: the expected cohort / 20 (Andrew et al.)",
    )


class ClientLevel(AccountedMode):
    """The client-level modes' shared declarations and refusals."""

    Params = ClientLevelParams
    client_level = True
    paper = MCMAHAN

    def refuse(self, cfg: Any, algorithm: Any) -> str | None:
        problem = super().refuse(cfg, algorithm)
        if problem:
            return problem
        mode, name = self.name, cfg.strategy.name
        refusal = getattr(algorithm, "client_dp_refusal", None)
        if refusal:
            return f"privacy.mode {mode!r} cannot wrap strategy '{name}': {refusal}"
        if cfg.defence.name != "none":
            return (
                f"privacy.mode {mode!r} cannot run with defence '{cfg.defence.name}': the release's sensitivity "
                "C / (qN) holds when each party's update enters it alone, clipped to privacy.clipping_norm; a defence "
                "first transforms each update with the others' (the round's median norm, the centre), or after a "
                "client-side clip; client-level DP's clipping is itself a norm bound: use privacy.clipping_norm"
            )
        if self.client_side and getattr(cfg.strategy, "personal_layers", ""):
            return (
                f"privacy.mode {mode!r} cannot wrap strategy '{name}' with personal layers: Flower's client-side "
                "clipping mods clip the whole model the client received and reject a reply that keeps layers at "
                "home; use central-fixed or central-adaptive (the server clips the shared layers)"
            )
        if cfg.federation.min_fit_clients > 1:
            return (
                f"privacy.mode {mode!r} samples each party with probability federation.fraction_fit (Poisson, as "
                "DP-FedAvg's accounting assumes), which has no minimum: remove federation.min_fit_clients"
            )
        return self._refuse_noise_split(cfg) if self.adaptive else None

    def _refuse_noise_split(self, cfg: Any) -> str | None:
        p, sb = cfg.privacy, count_stddev(cfg)
        if p.noise_multiplier > 0 and p.noise_multiplier >= 2 * sb:
            expected = expected_cohort(cfg)
            return (
                f"privacy.mode {self.name!r}: noise_multiplier {p.noise_multiplier:g} must be below 2 x "
                f"clipped_count_stddev = {2 * sb:g} (Andrew et al. split sigma between the update and the "
                f"clipped count; the default stddev is the expected cohort / 20 = {expected:g} / 20): "
                "raise privacy.clipped_count_stddev, sample more clients, or lower the noise"
            )
        return None


@register
class CentralFixed(ClientLevel):
    name = "central-fixed"
    summary = "client-level DP: the server clips each update w_k - w to norm C and noises the mean"


@register
class CentralAdaptive(ClientLevel):
    name = "central-adaptive"
    summary = "client-level DP: C follows the target_quantile of the update norms from a noised count"
    paper = ANDREW
    Params = AdaptiveParams
    adaptive = True


@register
class ClientFixed(ClientLevel):
    name = "client-fixed"
    summary = "client-level DP: the clients clip with Flower's fixedclipping_mod; the server noises"
    client_side = True

    def client_mod(self, params: Any) -> Mod:
        return fixedclipping_mod


@register
class ClientAdaptive(ClientLevel):
    name = "client-adaptive"
    summary = "client-level DP: the clients clip with Flower's adaptiveclipping_mod; the server noises"
    paper = ANDREW
    Params = AdaptiveParams
    adaptive = True
    client_side = True

    def client_mod(self, params: Any) -> Mod:
        return adaptiveclipping_mod
