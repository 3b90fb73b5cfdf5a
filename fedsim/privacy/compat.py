"""Which configs a privacy mode can run, and why not: checked with the rest of the config.

The modes are plug-ins (:mod:`fedsim.privacy.modes`); what they are (client-level or
sample-level, clipping on the server or in the clients, fixed or adaptive) comes from
their declarations, and so do the sets below, which the server's DP code reads.

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

from collections.abc import Iterator

from fedsim.privacy.modes import PRIVACY_MODES, AccountedMode
from fedsim.schema.experiment import ExperimentConfig


class _Modes:
    """The names of the registered modes that declare ``flag`` (every mode for None):
    ``mode in CLIENT_LEVEL`` reads the chosen mode's declaration, so a new mode's file
    is all it takes."""

    def __init__(self, flag: str | None) -> None:
        self.flag = flag

    def _has(self, name: str) -> bool:
        return self.flag is None or bool(getattr(PRIVACY_MODES.get(name), self.flag))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in PRIVACY_MODES and self._has(name)

    def __iter__(self) -> Iterator[str]:
        return iter([n for n in PRIVACY_MODES.available() if self._has(n)])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def __repr__(self) -> str:
        return repr(tuple(self))


MODES = _Modes(None)
CLIENT_LEVEL = _Modes("client_level")
ADAPTIVE = _Modes("adaptive")
CLIENT_SIDE = _Modes("client_side")
PER_SAMPLE = _Modes("per_sample")


def draws_own_cohort(cfg: ExperimentConfig) -> bool:
    """Whether the run's privacy draws the cohort itself (client-level DP's Poisson
    sampling, which its accounting assumes): nothing else may choose or drop parties."""
    return cfg.privacy.mode in CLIENT_LEVEL


def compression_refusal(cfg: ExperimentConfig, codec: str) -> str | None:
    """Why a lossy ``comm.compressor`` cannot run with the chosen mode, or None.

    Allowed: the central modes (the server clips the *decoded* update to C and noises
    the mean, so the sensitivity stays C: the codec is part of the party's input) and
    dpsgd (the update is already the output of DP-SGD: compressing it is
    post-processing). Refused: the client-side modes, whose clients clip before the
    codec runs while the server's noise assumes updates no longer than C."""
    mode = cfg.privacy.mode
    if mode not in CLIENT_SIDE:
        return None
    return (
        f"comm.compressor '{codec}' with privacy.mode '{mode}': the clients clip each update to C and the "
        "server's noise covers a sensitivity of C, but the codec runs after the clipping and its update can "
        "be longer than C (QSGD's levels, sign's scale, a residual added back), so the noise no longer covers "
        "it; use a central-* mode (the server clips the decoded update) or dpsgd"
    )


def asynchronous_refusal(cfg: ExperimentConfig, server: str) -> str | None:
    """Why the asynchronous server ``server`` (``asynchronous.mode``) cannot run with the
    chosen mode, or None: every mode's accounting composes one release per synchronous
    round (client-level DP: over a Poisson-sampled cohort; DP-SGD: each party's epochs of
    a round), which an event loop of single arrivals has not."""
    mode = cfg.privacy.mode
    if mode not in MODES or mode == "none":
        return None
    what = "a Poisson-sampled cohort per round" if mode in CLIENT_LEVEL else "synchronous rounds"
    return f"asynchronous.mode {server} with privacy.mode {mode}: its accounting assumes {what}; use privacy.mode none"


def training_parties(cfg: ExperimentConfig) -> int:
    """N: the parties that train, all but ``federation.holdout_parties`` (the count
    ``fedsim.inputs.run_inputs.holdout_parties`` draws; a test checks they agree)."""
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
    :class:`~strategies.registry.Algorithm`), or None: the mode's own refusals
    (:meth:`~fedsim.privacy.modes.PrivacyMode.refuse`), and BatchNorm for every mode.
    ``has_batchnorm`` of the model when known (the model is built later)."""
    mode = PRIVACY_MODES.get(cfg.privacy.mode)
    if has_batchnorm and isinstance(mode, AccountedMode):
        return (
            f"privacy.mode {mode.name!r} refuses models with BatchNorm ({cfg.model.name}): Opacus computes no per-sample "
            "gradients through it and noise on running variances makes them negative; use a model without it"
        )
    return mode.refuse(cfg, algorithm)
