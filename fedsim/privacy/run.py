"""A run's privacy on the server: the release, the ledger, the budget, the records.

:class:`PrivacyRun` is an extension of the strategy's round
(:class:`~strategies.extension.ServerExtension`), composed with the strategy when the
server builds it, as Flower's ``DifferentialPrivacy*`` strategies wrap another: it
draws the cohort and wraps the algorithm's aggregate (client-level modes,
:mod:`.central`), sends the noise multiplier to DP-SGD's clients and keeps the ledger
of releases in the strategy's checkpoints (under ``__privacy__``). After every round
the server's privacy callback (``fedsim/server/callbacks/privacy.py``) accounts the
round (:meth:`PrivacyRun.account`), which adds to the ``metrics.jsonl`` row:

* ``epsilon`` at ``delta`` from ``accountant`` (DP-SGD: the worst party's, with
  ``epsilon_mean`` over all parties), ``noise_multiplier`` (this round's);
  ``epsilon_infinite: true`` where no noise makes epsilon infinite (JSON has no
  infinity: ``epsilon`` is then null);
* ``privacy_stop`` when ``privacy.target_epsilon`` would be exceeded by the next round:
  the run then ends after this round (resumable like any run: a resume finds it done).

The ledger is a ledger: every release is composed with the noise it was made with, in
segments of one noise multiplier each. Client-level: one subsampled Gaussian release
(q, sigma) per round; DP-SGD: for each party its local steps, each a release
(q_k, sigma) (the steps a party's aggregated replies report; a reply the server drops
releases nothing). Epsilon therefore never decreases, and a resume never rewrites what
was spent: a calibrated run extended by ``federation.rounds`` calibrates only its new
rounds against what is left of the budget, and one whose budget is spent (or whose next
round would exceed ``target_epsilon``) is refused before anything is written.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass, field

import numpy as np
import torch

from fedsim.errors import ConfigError
from fedsim.privacy.accounting import SIGMA_MAX, calibrate_sigma, check_delta, default_delta, epsilon
from fedsim.privacy.central import ClientLevelDP
from fedsim.privacy.compat import CLIENT_LEVEL
from fedsim.privacy.dpsgd import sample_rate, steps_per_epoch
from fedsim.schema.experiment import ExperimentConfig, epoch_range
from strategies.extension import Aggregator, ServerExtension
from strategies.strategy import Aggregate

log = logging.getLogger(__name__)

#: the config key that carries DP-SGD's noise multiplier to the clients (calibrated on the server)
SIGMA_KEY = "privacy-noise-multiplier"
#: a calibrated budget counts as spent when less than this share of it is left (the
#: bisection leaves about 1e-6 unspent; what little is left buys no useful round)
SPENT_SHARE = 1e-3


def train_size(n: int, val_fraction: float) -> int:
    """A party's training samples after its validation share (as ``Experiment.split``)."""
    if val_fraction <= 0 or n <= 1:
        return n
    n_val = min(max(int(round(val_fraction * n)), 1), n - 1)
    return n - n_val


@dataclass
class Segment:
    """Releases made with one noise multiplier: client-level rounds, or DP-SGD steps per party."""

    sigma: float
    rounds: int = 0
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class PrivacyRun(ServerExtension):
    """The privacy of one run (module docstring)."""

    #: every round is a release, an empty cohort's too: client-level DP's w + z must not
    #: reveal that nobody was sampled (DP-SGD's is the model as it was)
    releases_empty_cohort = True
    #: the entry of the strategy's checkpoint state that holds the ledger
    CHECKPOINT_KEY = "__privacy__"

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
            population, what = n_parties, "parties that train"
        else:
            b = cfg.train.batch_size
            sizes = [train_size(party_sizes[k], cfg.data.val_fraction) for k in self.parties]
            self.rates = np.array([sample_rate(n, b) for n in sizes])
            # the most steps a party can take in a round (the upper end of train.epochs)
            self.round_steps = np.array([epoch_range(cfg.train.epochs)[1] * steps_per_epoch(n, b) for n in sizes])
            population, what = (max(sizes) if sizes else 1), "training samples of the largest party"
        self.population, self.population_what = population, what
        if p.target_delta is not None:
            check_delta(p.target_delta, population, what)
        self.delta = p.target_delta if p.target_delta is not None else default_delta(population)
        self.target = p.target_epsilon
        self.calibrated = bool(p.calibrate)
        self.planned_rounds = cfg.federation.rounds
        self.index = {k: i for i, k in enumerate(self.parties)}
        self.ledger: list[Segment] = []
        self.round = 0  # the last round accounted
        self.release: ClientLevelDP | None = None
        sigma = p.noise_multiplier
        if self.calibrated:
            sigma = calibrate_sigma(
                lambda s: self.epsilon_after(s, cfg.federation.rounds),
                self.target,
                f"in {cfg.federation.rounds} rounds",
            )
            log.info(
                "privacy.calibrate: noise_multiplier %.4f spends epsilon %.4g in %d rounds",
                sigma,
                self.target,
                cfg.federation.rounds,
            )
        self._use_sigma(sigma)

    def _use_sigma(self, sigma: float) -> None:
        """The noise multiplier of the rounds to come (the client-level release's noise with it)."""
        self.sigma = float(sigma)
        if self.client_level:
            self.release = ClientLevelDP(self.cfg, self.sigma)

    # ------------------------------------------------------------- accounting
    def _events(self, extra: Segment | None = None) -> list[tuple[float, float, int]]:
        """Client-level: the ledger's (q, sigma, rounds), and ``extra``'s."""
        segs = self.ledger + ([extra] if extra is not None else [])
        return [(self.q, seg.sigma, seg.rounds) for seg in segs]

    def _party_eps(self, segments: list[Segment]) -> np.ndarray:
        """Each party's epsilon after the DP-SGD steps of ``segments`` (one computation per
        distinct history of (q, sigma, steps))."""
        cache: dict[tuple, float] = {}
        out = np.zeros(len(self.parties))
        for i, q in enumerate(self.rates):
            events = tuple((float(q), seg.sigma, int(seg.steps[i])) for seg in segments if seg.steps.size)
            if events not in cache:
                cache[events] = epsilon(list(events), self.delta, self.accountant)
            out[i] = cache[events]
        return out

    def _planned(self, sigma: float, rounds: int) -> Segment:
        """``rounds`` more rounds at ``sigma`` in which every party trains (what calibration plans for)."""
        if self.client_level:
            return Segment(sigma, rounds=rounds)
        return Segment(sigma, steps=self.round_steps * rounds)

    def epsilon_after(self, sigma: float, rounds: int) -> float:
        """The worst epsilon after the ledger and ``rounds`` more rounds at ``sigma`` in which every party trains."""
        if self.client_level:
            return epsilon(self._events(self._planned(sigma, rounds)), self.delta, self.accountant)
        return float(self._party_eps([*self.ledger, self._planned(sigma, rounds)]).max(initial=0.0))

    def spent(self) -> dict:
        """This round's row values: epsilon (and its mean over parties for DP-SGD), delta, accountant."""
        row: dict = {"delta": self.delta, "accountant": self.accountant, "noise_multiplier": self.sigma}
        if self.client_level:
            row["epsilon"] = epsilon(self._events(), self.delta, self.accountant)
        else:
            eps = self._party_eps(self.ledger)
            row["epsilon"] = float(eps.max(initial=0.0))
            row["epsilon_mean"] = float(eps.mean()) if eps.size else 0.0
        if math.isinf(row["epsilon"]):  # no noise: recorded as null (strict JSON), said to be infinite
            row["epsilon_infinite"] = True
        return row

    def next_round_exceeds(self) -> str | None:
        """Why the next round must not run (it could spend more than target_epsilon), or None."""
        if self.target is None:
            return None
        nxt = self.epsilon_after(self.sigma, 1)
        if nxt <= self.target * (1 + 1e-9):
            return None
        return f"the next round would spend epsilon {nxt:.4g} > privacy.target_epsilon {self.target:g}"

    def check_start(self) -> None:
        """The target allows at least one round (ConfigError otherwise)."""
        reason = self.next_round_exceeds()
        if reason is not None and not self.ledger:
            raise ConfigError(f"privacy.target_epsilon allows no round: {reason}")

    def check_resume(self, history: list[dict]) -> None:
        """A resume that could not stay within ``target_epsilon`` is refused (ConfigError):
        a calibrated run whose budget the rounds done have spent, a run whose next round
        would exceed it. A run that already stopped at its budget is not checked (its
        resume does nothing)."""
        if self.target is None or any(r.get("privacy_stop") for r in history):
            return
        if self.round >= self.cfg.federation.rounds:
            return  # nothing left to run
        reason = self.next_round_exceeds()
        if reason is not None:
            spent = self.spent()["epsilon"]
            done = f"the {self.round} round{'s' if self.round != 1 else ''} done spent epsilon {spent:.4g}"
            raise ConfigError(
                f"--resume: federation.rounds={self.cfg.federation.rounds} cannot stay within "
                f"privacy.target_epsilon={self.target:g}: {done}, and {reason}; "
                f"keep federation.rounds={self.round}"
            )

    def account(self, rl) -> bool:
        """Compose round ``rl``'s release; add the row values; True when the run must stop."""
        if not self.ledger or self.ledger[-1].sigma != self.sigma:
            self.ledger.append(Segment(self.sigma, steps=np.zeros(len(self.parties), dtype=np.int64)))
        seg = self.ledger[-1]
        if self.client_level:
            seg.rounds += 1
        else:
            for o in rl.outcomes:
                seg.steps[self.index[o.party]] += int(o.metrics.get("steps", 0))
        self.round = int(rl.round)
        row = self.spent()
        stop = self.next_round_exceeds() if rl.round < self.cfg.federation.rounds else None
        if stop is not None:
            row["privacy_stop"] = stop
            log.warning("privacy budget: stopping after round %d: %s", rl.round, stop)
        rl.server_metrics.update(row)
        return stop is not None

    # ------------------------------------------- the strategy's round (extension)
    def sample(self, server_round: int, parties: list[int]) -> list[int] | None:
        """Client-level DP's Poisson cohort; DP-SGD leaves the draw to the strategy."""
        return self.release.sample(server_round, parties) if self.release is not None else None

    def client_config(self, server_round: int) -> dict:
        """What the clients read: the clipping norm and mode of the client-side modes, or
        DP-SGD's noise multiplier (calibrated here)."""
        if self.release is not None:
            return self.release.client_config(server_round)
        return {SIGMA_KEY: float(self.sigma)}

    def aggregate(self, inner: Aggregator, server_round: int, global_state, outcomes) -> Aggregate:
        """Client-level DP: ``inner`` (the algorithm) aggregates the privatised cohort;
        DP-SGD: ``inner``'s aggregate, or the model as it was for an empty cohort."""
        if self.release is not None:
            return self.release.aggregate(inner, server_round, global_state, outcomes)
        if not outcomes:
            return Aggregate(OrderedDict(global_state))
        return inner.aggregate(server_round, global_state, outcomes)

    def checkpoint_state(self) -> dict:
        return {self.CHECKPOINT_KEY: self.state_dict()}

    def load_checkpoint_state(self, state) -> None:
        if self.CHECKPOINT_KEY in state:
            self.load_state_dict(state[self.CHECKPOINT_KEY])

    def state_dict(self) -> dict:
        return {
            # totals, as older checkpoints held them
            "rounds": int(sum(seg.rounds for seg in self.ledger)),
            "steps": torch.from_numpy(self._total_steps()),
            "ledger": [
                {"sigma": seg.sigma, "rounds": int(seg.rounds), "steps": torch.from_numpy(seg.steps.copy())}
                for seg in self.ledger
            ],
            "round": int(self.round),
            "sigma": float(self.sigma),
            "planned_rounds": int(self.planned_rounds),
            **(self.release.state_dict() if self.release is not None else {}),
        }

    def _total_steps(self) -> np.ndarray:
        total = np.zeros(len(self.parties), dtype=np.int64)
        for seg in self.ledger:
            if seg.steps.size:
                total += seg.steps
        return total

    def load_state_dict(self, state: dict) -> None:
        """The ledger of a checkpoint; a calibrated run extended by ``federation.rounds``
        calibrates its new rounds against what the ledger leaves of the budget."""
        ledger = state.get("ledger")
        if ledger is not None:
            self.ledger = [
                Segment(float(seg["sigma"]), int(seg.get("rounds", 0)), _int_array(seg.get("steps"))) for seg in ledger
            ]
            self.round = int(state.get("round", 0))
        else:  # an older fedsim's checkpoint: totals only, made with the noise this config gives
            rounds, steps = int(state.get("rounds", 0)), _int_array(state.get("steps"))
            self.ledger = [Segment(self.sigma, rounds, steps)] if rounds or steps.any() else []
            self.round = rounds if self.client_level else self.round
        saved_sigma = state.get("sigma")
        if self.calibrated and ledger is not None:
            same_plan = int(state.get("planned_rounds", -1)) == self.cfg.federation.rounds
            if same_plan and saved_sigma is not None:
                self._use_sigma(float(saved_sigma))  # the sigma this plan was calibrated with, bit for bit
            elif self.cfg.federation.rounds > self.round:
                self._calibrate_extension(int(state.get("planned_rounds", self.round)))
            self.planned_rounds = self.cfg.federation.rounds
        if self.release is not None:
            self.release.load_state_dict(state)

    def _calibrate_extension(self, planned: int) -> None:
        """The noise of rounds round+1..federation.rounds: the smallest that keeps the
        whole ledger within target_epsilon; ConfigError when none can (``planned``: the
        rounds the run was calibrated for)."""
        rounds = self.cfg.federation.rounds
        more = rounds - self.round
        spent = self.spent()["epsilon"]
        done = f"the {self.round} round{'s' if self.round != 1 else ''} done spent epsilon {spent:.4g}"
        if spent >= self.target * (1 - SPENT_SHARE) or self.epsilon_after(SIGMA_MAX, more) > self.target:
            raise ConfigError(
                f"--resume: federation.rounds={rounds} cannot stay within privacy.target_epsilon={self.target:g}: "
                f"{done} (calibrated for {planned} rounds), nothing is left for {more} more; keep "
                f"federation.rounds={self.round}, or start a new run calibrated for {rounds} rounds"
            )
        sigma = calibrate_sigma(lambda s: self.epsilon_after(s, more), self.target, f"in {more} more rounds")
        log.info("privacy.calibrate: rounds %d-%d get noise_multiplier %.4f (%s)", self.round + 1, rounds, sigma, done)
        self._use_sigma(sigma)


def training_sizes(dataidxs: Mapping[int, Sized], holdout: Iterable[int]) -> dict[int, int]:
    """The sizes of the parties that train (held-out ones never send anything): the
    population the ledger accounts for."""
    held = set(holdout)
    return {k: len(v) for k, v in dataidxs.items() if k not in held}


def privacy_for(
    cfg: ExperimentConfig, dataidxs: Callable[[], Mapping[int, Sized]], holdout: Callable[[], Iterable[int]]
) -> PrivacyRun | None:
    """The privacy of a run of ``cfg``, or None with ``privacy.mode: none``;
    ``dataidxs()`` and ``holdout()``, the run's partition and held-out parties, are
    read only when privacy is on."""
    if cfg.privacy.mode == "none":
        return None
    return PrivacyRun(cfg, training_sizes(dataidxs(), holdout()))


def _int_array(value) -> np.ndarray:
    if value is None:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=np.int64)


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
    if last.get("epsilon_infinite"):
        out["epsilon_infinite"] = True
    return out
