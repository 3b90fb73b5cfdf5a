"""A run's privacy on the server: the release, the ledger, the budget, the records.

:class:`PrivacyRun` is attached to the strategy (``FedsimStrategy.privacy``) before the
round loop. It draws the cohort and privatises the aggregate (client-level modes,
:mod:`.central`), sends the noise multiplier to DP-SGD's clients, keeps the ledger of
releases in the strategy's checkpoints and, after every round, adds to the
``metrics.jsonl`` row:

* ``epsilon`` at ``delta`` from ``accountant`` (DP-SGD: the worst party's, with
  ``epsilon_mean`` over all parties), ``noise_multiplier``;
* ``privacy_stop`` when ``privacy.target_epsilon`` would be exceeded by the next round:
  the run then ends after this round (resumable like any run: a resume finds it done).

Ledger: client-level, one subsampled Gaussian release (q, sigma) per round; DP-SGD, for
each party its total local steps, each a release (q_k, sigma) (the steps a party's
aggregated replies report; a reply the server drops releases nothing).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict

import numpy as np
import torch

from strategies.strategy import Aggregate

from ..errors import ConfigError
from ..schema import ExperimentConfig, epoch_range
from .accounting import calibrate_sigma, default_delta, epsilon
from .central import ClientLevelDP
from .compat import CLIENT_LEVEL
from .dpsgd import sample_rate, steps_per_epoch

log = logging.getLogger(__name__)

#: the config key that carries DP-SGD's noise multiplier to the clients (calibrated on the server)
SIGMA_KEY = "privacy-noise-multiplier"


def train_size(n: int, val_fraction: float) -> int:
    """A party's training samples after its validation share (as ``Experiment.split``)."""
    if val_fraction <= 0 or n <= 1:
        return n
    n_val = min(max(int(round(val_fraction * n)), 1), n - 1)
    return n - n_val


class PrivacyRun:
    """The privacy of one run (module docstring)."""

    def __init__(self, cfg: ExperimentConfig, party_sizes: dict[int, int]) -> None:
        p = cfg.privacy
        self.cfg = cfg
        self.mode = p.mode
        self.accountant = p.accountant
        self.client_level = p.mode in CLIENT_LEVEL
        self.parties = sorted(party_sizes)
        n_parties = len(self.parties)
        self.q = cfg.federation.fraction_fit
        if self.client_level:
            population = n_parties
        else:
            b = cfg.train.batch_size
            sizes = [train_size(party_sizes[k], cfg.data.val_fraction) for k in self.parties]
            self.rates = np.array([sample_rate(n, b) for n in sizes])
            # the most steps a party can take in a round (the upper end of train.epochs)
            self.round_steps = np.array([epoch_range(cfg.train.epochs)[1] * steps_per_epoch(n, b) for n in sizes])
            population = max(sizes) if sizes else 1
        self.delta = p.target_delta if p.target_delta is not None else default_delta(population)
        self.target = p.target_epsilon
        self.sigma = p.noise_multiplier
        if p.calibrate:
            self.sigma = calibrate_sigma(
                lambda s: self.epsilon_after(s, cfg.federation.rounds),
                self.target,
                f"in {cfg.federation.rounds} rounds",
            )
            log.info("privacy.calibrate: noise_multiplier %.4f spends epsilon %.4g", self.sigma, self.target)
        self.release = None
        if self.client_level:
            self.release = ClientLevelDP(cfg, self.sigma)
        self.rounds = 0  # client-level releases composed
        self.steps = np.zeros(n_parties, dtype=np.int64)  # DP-SGD steps per party
        self.index = {k: i for i, k in enumerate(self.parties)}

    # ------------------------------------------------------------- accounting
    def _party_eps(self, sigma: float, steps: np.ndarray) -> np.ndarray:
        """Each party's epsilon after ``steps`` DP-SGD steps (one computation per distinct (q, steps))."""
        cache: dict[tuple[float, int], float] = {}
        out = np.zeros(len(steps))
        for i, (q, s) in enumerate(zip(self.rates, steps)):
            key = (float(q), int(s))
            if key not in cache:
                cache[key] = epsilon([(q, sigma, int(s))], self.delta, self.accountant)
            out[i] = cache[key]
        return out

    def epsilon_after(self, sigma: float, rounds: int) -> float:
        """The worst epsilon after ``rounds`` rounds in which every party trains (what calibration plans for)."""
        if self.client_level:
            return epsilon([(self.q, sigma, rounds)], self.delta, self.accountant)
        return float(self._party_eps(sigma, self.round_steps * rounds).max(initial=0.0))

    def spent(self) -> dict:
        """This round's row values: epsilon (and its mean over parties for DP-SGD), delta, accountant."""
        row = {"delta": self.delta, "accountant": self.accountant, "noise_multiplier": self.sigma}
        if self.client_level:
            row["epsilon"] = epsilon([(self.q, self.sigma, self.rounds)], self.delta, self.accountant)
        else:
            eps = self._party_eps(self.sigma, self.steps)
            row["epsilon"] = float(eps.max(initial=0.0))
            row["epsilon_mean"] = float(eps.mean()) if eps.size else 0.0
        return row

    def next_round_exceeds(self) -> str | None:
        """Why the next round must not run (it could spend more than target_epsilon), or None."""
        if self.target is None:
            return None
        if self.client_level:
            nxt = epsilon([(self.q, self.sigma, self.rounds + 1)], self.delta, self.accountant)
        else:
            nxt = float(self._party_eps(self.sigma, self.steps + self.round_steps).max(initial=0.0))
        if nxt <= self.target * (1 + 1e-9):
            return None
        return f"the next round would spend epsilon {nxt:.4g} > privacy.target_epsilon {self.target:g}"

    def check_start(self) -> None:
        """The target allows at least one round (ConfigError otherwise)."""
        reason = self.next_round_exceeds()
        if reason is not None and self.rounds == 0 and not self.steps.any():
            raise ConfigError(f"privacy.target_epsilon allows no round: {reason}")

    def account(self, rl) -> bool:
        """Compose round ``rl``'s release; add the row values; True when the run must stop."""
        if self.client_level:
            self.rounds += 1
        else:
            for o in rl.outcomes:
                self.steps[self.index[o.party]] += int(o.metrics.get("steps", 0))
        row = self.spent()
        stop = self.next_round_exceeds() if rl.round < self.cfg.federation.rounds else None
        if stop is not None:
            row["privacy_stop"] = stop
            log.warning("privacy budget: stopping after round %d: %s", rl.round, stop)
        rl.server_metrics.update(row)
        return stop is not None

    def after_round(self, record):
        """``RoundHooks.after_round`` that accounts before the recorder writes the row."""

        def hook(rl) -> bool:
            stop = self.account(rl)
            return bool(record(rl)) or stop

        return hook

    # --------------------------------------------------- the strategy's hooks
    def sample(self, server_round: int, parties: list[int]) -> list[int] | None:
        return self.release.sample(server_round, parties) if self.release is not None else None

    def client_config(self, server_round: int) -> dict:
        if self.release is not None:
            return self.release.client_config(server_round)
        return {SIGMA_KEY: float(self.sigma)}

    def aggregate(self, strategy, server_round: int, global_state, outcomes) -> Aggregate:
        if self.release is not None:
            return self.release.aggregate(strategy, server_round, global_state, outcomes)
        if not outcomes:
            return Aggregate(OrderedDict(global_state))
        return strategy.aggregate(server_round, global_state, outcomes)

    def state_dict(self) -> dict:
        return {
            "rounds": int(self.rounds),
            "steps": torch.from_numpy(self.steps.copy()),
            **(self.release.state_dict() if self.release is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.rounds = int(state.get("rounds", 0))
        steps = state.get("steps")
        if steps is not None:
            self.steps = np.asarray(steps.numpy() if hasattr(steps, "numpy") else steps, dtype=np.int64)
        if self.release is not None:
            self.release.load_state_dict(state)


def summary_fields(cfg: ExperimentConfig, history: list[dict]) -> dict:
    """``summary.json``'s privacy: mode, epsilon, delta, accountant of the last round; the stop."""
    p = cfg.privacy
    if p.mode == "none":
        return {}
    last = next((r for r in reversed(history) if "delta" in r), {})
    eps = last.get("epsilon")
    out = {
        "privacy_mode": p.mode,
        "epsilon": eps if eps is None or math.isfinite(eps) else None,
        "delta": last.get("delta"),
        "accountant": last.get("accountant", p.accountant),
        "noise_multiplier": last.get("noise_multiplier", p.noise_multiplier),
        "privacy_stop": next((r["privacy_stop"] for r in history if r.get("privacy_stop")), None),
    }
    if "epsilon_mean" in last:
        out["epsilon_mean"] = last["epsilon_mean"]
    return out
