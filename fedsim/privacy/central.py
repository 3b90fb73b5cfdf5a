"""Client-level DP: DP-FedAvg (McMahan et al. 2018) around any mean-based server half.

Per round t, with N parties, sampling rate q = ``federation.fraction_fit``, clipping norm
C and noise multiplier sigma:

1. **Poisson cohort**: each party joins with probability q, drawn from (seed, round);
   the accountant's subsampled Gaussian assumes exactly this (``accounting``).
2. **Clip** each reply's update Delta_k = w_k - w to norm C: on the server
   (``central-*``) or by Flower's ``fixedclipping_mod``/``adaptiveclipping_mod`` on the
   client (``client-*``, :mod:`.mods`; the server checks the bound).
3. **Noise the mean**: Delta = sum_k clip(Delta_k) / (qN) + z, z ~ N(0, (sigma_D C / (qN))^2 I)
   (Flower's ``compute_stdv`` with the expected cohort qN as the fixed denominator of
   McMahan et al.; every party weighs the same, which bounds its influence by C / (qN)).
4. **The algorithm aggregates** a cohort whose models average to w + Delta: reply k
   becomes w + (m/(qN)) clip(Delta_k) + z for the m replies, with equal weights. FedAvg
   returns w + Delta; FedAdam, FedAvgM and FedDyn step on Delta. Whatever the server
   does with it is post-processing, so the accountant's epsilon holds for any algorithm
   whose server reads the replies only through their mean (``compat``). An empty cohort
   still releases w + z (the release must not reveal that nobody was sampled).

Adaptive clipping (Andrew et al. 2021, "Differentially Private Learning with Adaptive
Clipping"): with b_k = 1[||Delta_k|| <= C] and the noised unclipped share
b = (sum b_k + N(0, sigma_b^2)) / (qN), C <- C exp(-eta_C (b - gamma)), where gamma is
``target_quantile`` (C tracks the gamma-quantile of the update norms), eta_C ``clip_lr``
and sigma_b ``clipped_count_stddev`` (default qN/20). The update noise is
sigma_D = (sigma^-2 - (2 sigma_b)^-2)^-1/2 (Flower's ``compute_adaptive_noise_params``),
so that the count and the update together cost what one Gaussian release with
multiplier sigma does: the accountant composes sigma. (Flower 1.42's adaptive wrappers
multiply C by exp(-eta (clipped share - gamma)), which moves C away from the quantile:
with most updates clipped, C shrinks further; fedsim follows the paper.)

Personalised algorithms send only their shared entries (``strategy.personal_layers``
names the others): updates, norms, clipping and noise cover exactly those
(:func:`shared_keys`), and a reply carrying anything else is an error rather than a
leak. With ``federation.holdout_parties`` N counts the parties that train.

Noise and the count's noise are drawn from (seed, round), so a run repeats and
resumes exactly.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from flwr.app import Message, MessageType, MetricRecord, RecordDict

from fedsim.privacy.compat import ADAPTIVE, CLIENT_SIDE, count_stddev, expected_cohort
from fedsim.schema.experiment import ExperimentConfig
from fedsim.util.flower_compat import KEY_CLIPPING_NORM, KEY_NORM_BIT, compute_adaptive_noise_params, compute_stdv
from fedsim.util.seeding import derive
from strategies.arrays import is_float, state_to_record
from strategies.personal import resolve_layers
from strategies.strategy import Aggregate, ClientOutcome

#: the config key that tells the client mod which of Flower's mods to run
MODE_KEY = "privacy-mode"
#: slack for float32 rounding when the server checks a client-side clipped update's norm
NORM_SLACK = 1e-4


def update_norm(state, global_state, keys=None) -> float:
    """||w_k - w|| over the float entries among ``keys`` (default: all), accumulated in float64."""
    total = 0.0
    for key in global_state if keys is None else keys:
        g = global_state[key]
        if is_float(g):
            total += float((state[key].double() - g.double()).pow(2).sum())
    return math.sqrt(total)


def shared_keys(cfg: ExperimentConfig, keys) -> list[str]:
    """The entries every party sends, in ``keys``' order: all of them, but for a
    personalised algorithm (``strategy.personal_layers``) the layers that are not
    personal. Only these are clipped and noised: the personal layers never leave the
    party, and the server keeps their global values (``FedsimStrategy.aggregate_train``)."""
    keys = list(keys)
    spec = getattr(cfg.strategy, "personal_layers", None)
    if not spec:
        return keys
    personal = set(resolve_layers(spec, keys))
    return [k for k in keys if k not in personal]


class ClientLevelDP:
    """Client-level DP of one run (module docstring): the cohort, the clipping, the noise."""

    def __init__(self, cfg: ExperimentConfig, sigma: float | None = None) -> None:
        p = cfg.privacy
        self.mode = p.mode
        self.cfg = cfg
        self.seed = cfg.seed
        self.q = cfg.federation.fraction_fit
        self.expected = expected_cohort(cfg)
        self.sigma = p.noise_multiplier if sigma is None else sigma
        self.clipping_norm = float(p.clipping_norm)
        self.adaptive = p.mode in ADAPTIVE
        self.client_side = p.mode in CLIENT_SIDE
        self.target_quantile, self.clip_lr = p.target_quantile, p.clip_lr
        self.count_std = 0.0
        self.update_sigma = self.sigma
        if self.adaptive:
            self.count_std, self.update_sigma = compute_adaptive_noise_params(
                self.sigma, self.expected, count_stddev(cfg) if self.sigma > 0 else None
            )

    # ------------------------------------------------------------- the cohort
    def sample(self, server_round: int, parties: list[int]) -> list[int]:
        """Poisson sampling: each party with probability q, from (seed, round)."""
        if self.q >= 1.0:
            return list(parties)
        rng = np.random.default_rng(derive(self.seed, "sample", "fit-poisson", server_round))
        keep = rng.random(len(parties)) < self.q
        return [p for p, k in zip(parties, keep) if k]

    def client_config(self, server_round: int) -> dict:
        """What the clients' mods read: the clipping norm of this round (client-side modes)."""
        if not self.client_side:
            return {}
        return {KEY_CLIPPING_NORM: float(self.clipping_norm), MODE_KEY: self.mode}

    # -------------------------------------------------------------- the release
    def noise_std(self) -> float:
        return compute_stdv(self.update_sigma, self.clipping_norm, self.expected)

    def noise(self, server_round: int, global_state, keys: list[str]) -> dict[str, torch.Tensor]:
        """z ~ N(0, std^2 I) on every float entry among ``keys``, from (seed, round)."""
        gen = torch.Generator().manual_seed(derive(self.seed, "privacy", "noise", server_round))
        std = self.noise_std()
        out = {}
        for key in keys:
            g = global_state[key]
            if is_float(g):
                out[key] = (torch.randn(g.shape, generator=gen, dtype=torch.float64) * std).to(g.dtype).to(g.device)
        return out

    def aggregate(self, strategy, server_round: int, global_state, outcomes: list[ClientOutcome]) -> Aggregate:
        """The algorithm's aggregate of the privatised cohort (module docstring)."""
        C = self.clipping_norm
        m = len(outcomes)
        factor_all = m / self.expected if self.expected > 0 else 1.0
        keys = shared_keys(self.cfg, global_state)
        z = self.noise(server_round, global_state, keys)
        unclipped = 0
        clipped_shares = []
        private: list[ClientOutcome] = []
        for o in outcomes:
            if set(o.state) != set(keys):  # an entry outside the clipped, noised ones would leak
                raise RuntimeError(
                    f"party {o.party} sent entries {sorted(set(o.state) ^ set(keys))[:3]} other than the shared "
                    "ones the client-level DP release clips and noises"
                )
            norm = update_norm(o.state, global_state, keys)
            if self.client_side:
                # a malicious party skips its own clipping mod (the server, trusting the clients
                # to clip, cannot tell): its poisoned update enters the mean as sent
                if norm > C * (1 + NORM_SLACK) + 1e-12 and not o.poisoned:
                    raise RuntimeError(
                        f"party {o.party}'s update has norm {norm:.6g} > clipping norm {C:.6g}: the client-side mod did not clip it"
                    )
                # the server sees clipped updates: only the adaptive mod reports whether it clipped
                clipped = bool(o.metrics.get(KEY_NORM_BIT, 0)) if self.adaptive else None
                scale = 1.0
            else:
                clipped = norm > C
                scale = min(1.0, C / norm) if norm > 0 else 1.0
            unclipped += 0 if clipped else 1
            if clipped is not None:
                clipped_shares.append(float(clipped))
            factor = scale * factor_all
            state = OrderedDict()
            for key in keys:
                w, g = o.state[key], global_state[key]
                if not is_float(g):
                    state[key] = w
                    continue
                # an update within the norm is the reply itself (no rounding through w + (w_k - w))
                base = w if factor == 1.0 else g + (w - g) * factor
                state[key] = base + z[key]
            private.append(self._outcome(o.party, o.node_id, o.metrics, state))
        if not private:  # nobody was sampled (or replied): the release is w + z
            state = OrderedDict((k, global_state[k] + z[k] if k in z else global_state[k]) for k in keys)
            private.append(self._outcome(-1, 0, {}, state))
        agg = strategy.aggregate(server_round, global_state, private)
        metrics = {
            "dp_clipping_norm": C,
            "dp_noise_std": self.noise_std(),
            "dp_clipped_share": float(np.mean(clipped_shares)) if clipped_shares else None,
        }
        if self.adaptive:
            self._adapt(server_round, unclipped)
        return Aggregate(agg.state, {**agg.metrics, **metrics})

    @staticmethod
    def _outcome(party: int, node_id: int, metrics: dict, state) -> ClientOutcome:
        """A reply of the privatised cohort: equal weights, its state also as the Flower
        message that Flower's own aggregations (FedAdam, FedAvgM) read."""
        content = RecordDict({"arrays": state_to_record(state), "metrics": MetricRecord({"num-examples": 1})})
        msg = Message(content, dst_node_id=int(node_id), message_type=MessageType.TRAIN)
        return ClientOutcome(
            party=party, node_id=node_id, num_examples=1, metrics=dict(metrics), state=state, message=msg
        )

    def _adapt(self, server_round: int, unclipped: int) -> None:
        """Andrew et al.'s geometric update of C from the noised unclipped share."""
        rng = np.random.default_rng(derive(self.seed, "privacy", "count", server_round))
        noisy = (
            (unclipped + rng.normal(0.0, self.count_std)) / self.expected
            if self.count_std > 0
            else unclipped / self.expected
        )
        self.clipping_norm *= math.exp(-self.clip_lr * (noisy - self.target_quantile))

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"clipping_norm": float(self.clipping_norm)}

    def load_state_dict(self, state: dict) -> None:
        self.clipping_norm = float(state["clipping_norm"])
