"""Which configs a privacy mode can run, and why not: checked with the rest of the config.

* **Client-level modes** (``central-*``, ``client-*``) wrap the server half: the cohort
  is drawn by Poisson sampling, each client's update is clipped, and the algorithm
  aggregates a cohort whose models average to the noised mean of the clipped updates
  (:mod:`.central`). That is differentially private when the server depends on the
  replies only through their mean; an algorithm that does not (it picks among the
  clients, or uses arrays uploaded besides the model) declares why in
  ``Algorithm.client_dp_refusal`` and is refused.
* **dpsgd** replaces the local trainer by Opacus's: per-sample gradients of the task
  loss, clipped and noised, then the rule's parameter penalty (FedProx's proximal term),
  which reads no data. Rules that change gradients or the loss through the model
  (SCAFFOLD, MOON, FedDyn, ...: not ``batchable``) are refused. Every server half is
  post-processing of the parties' private models and combines with it.
* **Personalised algorithms** (``Algorithm.personal``) send only their shared entries
  (``RuleOutput.shared_keys``): the client-level modes clip and noise exactly those
  (the personal layers never leave the party) on the server; Flower's client-side mods
  (``client-*``) clip whole models and refuse partial replies, so they run only where
  ``strategy.personal_layers`` is empty; ``local`` shares nothing and is refused.
  ``dpsgd`` refuses them: their local training (phases over layer groups, Ditto's and
  APFL's second model, pFedMe's inner solver) is not the DP-SGD trainer's loop.
* Every mode refuses BatchNorm: Opacus computes no per-sample gradients through it, and
  noise on running variances makes them negative.
"""

from __future__ import annotations

from fedsim.config.schema import ExperimentConfig, PrivacyConfig

MODES = ("none", "central-fixed", "central-adaptive", "client-fixed", "client-adaptive", "dpsgd")
CLIENT_LEVEL = ("central-fixed", "central-adaptive", "client-fixed", "client-adaptive")
ADAPTIVE = ("central-adaptive", "client-adaptive")
CLIENT_SIDE = ("client-fixed", "client-adaptive")

#: privacy.* keys read only by some modes (a value other than the default elsewhere is an error)
MODE_KEYS = {
    "noise_multiplier": MODES[1:],
    "clipping_norm": CLIENT_LEVEL,
    "target_quantile": ADAPTIVE,
    "clip_lr": ADAPTIVE,
    "clipped_count_stddev": ADAPTIVE,
    "max_grad_norm": ("dpsgd",),
    "target_delta": MODES[1:],
    "target_epsilon": MODES[1:],
    "calibrate": MODES[1:],
    "accountant": MODES[1:],
}


def training_parties(cfg: ExperimentConfig) -> int:
    """N: the parties that train, all but ``federation.holdout_parties`` (the count
    ``fedsim.prepare.run_inputs.holdout_parties`` draws; a test checks they agree)."""
    n, value = cfg.partition.n_parties, cfg.federation.holdout_parties
    held = int(value) if value >= 1 else int(round(value * n))
    return n - min(max(held, 0), n - 1)


def expected_cohort(cfg: ExperimentConfig) -> float:
    """q N: the expected number of clients a round (the fixed denominator of DP-FedAvg)."""
    return cfg.federation.fraction_fit * training_parties(cfg)


def count_stddev(cfg: ExperimentConfig) -> float:
    """sigma_b of the adaptive modes' noised clipped count: given, or Andrew et al.'s expected cohort / 20."""
    p = cfg.privacy
    return p.clipped_count_stddev if p.clipped_count_stddev is not None else expected_cohort(cfg) / 20.0


def why_not(cfg: ExperimentConfig, algorithm, has_batchnorm: bool | None = None) -> str | None:
    """Why ``cfg`` cannot run its privacy mode with ``algorithm`` (the registry's
    :class:`~strategies.registry.Algorithm`), or None. ``has_batchnorm`` of the model
    when known (the model is built later)."""
    p: PrivacyConfig = cfg.privacy
    mode = p.mode
    if mode == "none":
        return None
    name = cfg.strategy.name
    if p.calibrate and p.target_epsilon is None:
        return "privacy.calibrate: true needs privacy.target_epsilon (the epsilon to calibrate the noise for)"
    if p.calibrate and p.noise_multiplier != PrivacyConfig.noise_multiplier:
        return "privacy.calibrate: true chooses privacy.noise_multiplier itself: remove one of them"
    if p.target_epsilon is not None and p.noise_multiplier == 0 and not p.calibrate:
        return "privacy.target_epsilon needs privacy.noise_multiplier > 0 (without noise epsilon is infinite)"
    if has_batchnorm:
        return (
            f"privacy.mode {mode!r} refuses models with BatchNorm ({cfg.model.name}): Opacus computes no per-sample "
            "gradients through it and noise on running variances makes them negative; use a model without it"
        )
    if mode in CLIENT_LEVEL:
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
        if mode in CLIENT_SIDE and getattr(cfg.strategy, "personal_layers", ""):
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
        if mode in ADAPTIVE:
            sb = count_stddev(cfg)
            if p.noise_multiplier > 0 and p.noise_multiplier >= 2 * sb:
                return (
                    f"privacy.mode {mode!r}: noise_multiplier {p.noise_multiplier:g} must be below 2 x "
                    f"clipped_count_stddev = {2 * sb:g} (Andrew et al. split sigma between the update and the "
                    f"clipped count; the default stddev is the expected cohort / 20 = {expected_cohort(cfg):g} / 20): "
                    "raise privacy.clipped_count_stddev, sample more clients, or lower the noise"
                )
    if mode == "dpsgd":
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
