"""Value checks of a loaded config: every key against its allowed set or range, and each
chosen plug-in (algorithm, attack, defence, data set, scheme, model, engine, trackers,
privacy mode) against its declarations (:mod:`fedsim.config.plugins`).

Errors are :class:`~fedsim.errors.ConfigError` with a one-line message naming the key
and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import strategies
from attacks.params import MaliciousParams
from fedsim import data as data_registry
from fedsim import models as model_registry
from fedsim.config import plugins
from fedsim.errors import ConfigError
from fedsim.privacy.compat import compression_refusal, draws_own_cohort
from fedsim.schema.experiment import ExperimentConfig, epoch_range
from partitioners.registry import SCHEMES


def _in_range(
    key: str, value: float, lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False
) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' = {value!r} is not a finite number")
    ok = True
    if lo is not None:
        ok &= value > lo if lo_open else value >= lo
    if hi is not None:
        ok &= value < hi if hi_open else value <= hi
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else (str(lo) if isinstance(lo, int) else f"{lo:g}")
        hi_s = "inf" if hi is None else (str(hi) if isinstance(hi, int) else f"{hi:g}")
        raise ConfigError(f"config key '{key}' = {value!r} is out of range; allowed: {left}{lo_s}, {hi_s}{right}")


def _one_of(key: str, value: str, allowed: Iterable[str]) -> None:
    allowed = sorted(allowed)
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"config key '{key}' = {value!r} is not allowed{hint}; allowed: {', '.join(allowed)}")


PARTITION_BY = ("label", "superclass")


def _only_where_read(section: Any, prefix: str, chosen: str, chooser: str, keys: Mapping[str, Sequence[str]]) -> None:
    """ConfigError for a key set away from its default where ``chosen`` does not read it."""
    defaults = {
        f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
        for f in dataclasses.fields(section)
    }
    for key, readers in keys.items():
        if chosen not in readers and getattr(section, key) != defaults[key]:
            raise ConfigError(
                f"config key '{prefix}.{key}' is read only with {chooser} {' or '.join(readers)}, "
                f"not {chosen!r}: remove it"
            )


OPTIMIZERS = ("sgd", "adam", "adamw")
LOSSES = ("ce", "focal")
BATCH_CLIENTS = ("auto", "on", "off")
DIVERGENCE_ACTIONS = ("stop", "continue")
MAX_SEED = 2**63 - 1


def _check_seed(cfg: ExperimentConfig) -> None:
    """``seed``: stored as int64 (dataidxs.npz) and hashed with the purpose of each draw."""
    _in_range("seed", cfg.seed, 0, MAX_SEED)


def _check_data(cfg: ExperimentConfig) -> None:
    """``data.*``: the keys the data set reads, their ranges, the image shape and the
    cross-validation folds, the data set's own checks, then what token sequences exclude."""
    d = cfg.data
    plugins.check_keys(cfg, "data")
    _in_range("data.seed", d.seed, 0, MAX_SEED)
    _in_range("data.val_fraction", d.val_fraction, 0.0, 1.0, hi_open=True)
    _in_range("data.feature_noise", d.feature_noise, 0.0, None)
    _in_range("data.n_train", d.n_train, 1, None)
    _in_range("data.n_test", d.n_test, 1, None)
    _in_range("data.num_classes", d.num_classes, 2, None)
    _in_range("data.noise", d.noise, 0.0, None)
    _in_range("data.synthetic_alpha", d.synthetic_alpha, 0.0, None)
    _in_range("data.synthetic_beta", d.synthetic_beta, 0.0, None)
    _in_range("data.num_groups", d.num_groups, 0, None)
    if len(d.image_shape) != 3 or any(s < 1 for s in d.image_shape):
        raise ConfigError(
            f"config key 'data.image_shape' = {list(d.image_shape)} must be [channels, height, width], each >= 1"
        )
    _in_range("data.cv_folds", d.cv_folds, 0, None)
    if d.cv_folds == 1:
        raise ConfigError("config key 'data.cv_folds' = 1 is not allowed; use 0 (no cross-validation) or K >= 2")
    if d.cv_folds >= 2:
        _in_range("data.cv_fold", d.cv_fold, 0, d.cv_folds - 1)
    if d.image_shape[1] < 8 or d.image_shape[2] < 8:
        raise ConfigError(f"config key 'data.image_shape' = {list(d.image_shape)}: height and width must be >= 8")
    plugins.check_plugins(cfg, "data")
    text = data_registry.is_text(d)
    if text and d.feature_noise > 0:
        raise ConfigError(
            f"config key 'data.feature_noise' > 0 needs real-valued inputs; '{d.dataset}' gives token sequences"
        )
    if text and d.augment:
        raise ConfigError(f"config key 'data.augment' = true needs images; '{d.dataset}' gives token sequences")


def _check_partition(cfg: ExperimentConfig) -> None:
    """``partition.*``: the keys the scheme reads, their ranges, ``partition.by`` only
    with a scheme that reads labels, then the scheme's own checks."""
    p = cfg.partition
    plugins.check_keys(cfg, "partition")
    _in_range("partition.n_parties", p.n_parties, 1, None)
    _in_range("partition.beta", p.beta, 0.0, None, lo_open=True)
    _in_range("partition.classes_per_party", p.classes_per_party, 1, None)
    _in_range("partition.min_size", p.min_size, 0, None)
    _in_range("partition.shards_per_party", p.shards_per_party, 1, None)
    _in_range("partition.max_redraws", p.max_redraws, 1, None)
    _one_of("partition.by", p.by, PARTITION_BY)
    if p.by != "label" and not SCHEMES.get(p.scheme).uses_labels:
        raise ConfigError(
            f"config key 'partition.by' = {p.by!r} changes only the label-skew schemes; "
            f"partition.scheme {p.scheme!r} does not read labels: remove it"
        )
    plugins.check_plugins(cfg, "partition")


def _check_model(cfg: ExperimentConfig) -> None:
    """``model.*``: the keys the model reads, their ranges, the model's own checks, then
    the model against the data: a sequence model for token sequences and only for them."""
    m, d = cfg.model, cfg.data
    plugins.check_keys(cfg, "model")
    _in_range("model.proj_dim", m.proj_dim, 1, None)
    _in_range("model.dropout", m.dropout, 0.0, 1.0, hi_open=True)
    plugins.check_plugins(cfg, "model")
    text = data_registry.is_text(d)
    tokens = model_registry.takes_tokens(m.name)
    if text and not tokens:
        raise ConfigError(
            f"model.name {m.name!r} needs real-valued inputs; data.dataset {d.dataset!r} gives token "
            f"sequences: use a sequence model ({', '.join(model_registry.token_models())})"
        )
    if tokens and not text:
        raise ConfigError(
            f"model.name {m.name!r} reads token sequences; data.dataset {d.dataset!r} is not text: use "
            "leaf-shakespeare, or hf with data.hf_text_key"
        )


def _check_train(cfg: ExperimentConfig) -> None:
    """``train.*``: the local epochs (a number or a range), optimiser and loss."""
    t = cfg.train
    lo, hi = epoch_range(t.epochs)
    if lo < 1 or hi < lo:
        raise ConfigError(f"config key 'train.epochs' = {t.epochs!r}: need 1 <= lo <= hi")
    _in_range("train.batch_size", t.batch_size, 1, None)
    _in_range("train.lr", t.lr, 0.0, None, lo_open=True)
    _in_range("train.momentum", t.momentum, 0.0, 1.0, hi_open=True)
    _in_range("train.weight_decay", t.weight_decay, 0.0, None)
    _one_of("train.optimizer", t.optimizer, OPTIMIZERS)
    _one_of("train.loss", t.loss, LOSSES)
    _in_range("train.focal_gamma", t.focal_gamma, 0.0, None)
    if t.focal_alpha is not None:
        _in_range("train.focal_alpha", t.focal_alpha, 0.0, 1.0)


def _check_strategy(cfg: ExperimentConfig) -> None:
    """``strategy.*``: the algorithm's own hyperparameters, from its declarations."""
    plugins.check(cfg, "strategy")


def _check_federation(cfg: ExperimentConfig) -> None:
    """``federation.*``: rounds, cohort fractions, failures and divergence, the held-out
    parties; client-side evaluation needs local validation data."""
    f = cfg.federation
    _in_range("federation.rounds", f.rounds, 1, None)
    _in_range("federation.fraction_fit", f.fraction_fit, 0.0, 1.0, lo_open=True)
    _in_range("federation.fraction_evaluate", f.fraction_evaluate, 0.0, 1.0)
    _in_range("federation.eval_every", f.eval_every, 0, None)
    _in_range("federation.min_fit_clients", f.min_fit_clients, 1, None)
    _in_range("federation.straggler_fraction", f.straggler_fraction, 0.0, 1.0)
    _in_range("federation.max_failure_fraction", f.max_failure_fraction, 0.0, 1.0)
    _in_range("federation.divergence_factor", f.divergence_factor, 0.0, None)
    _one_of("federation.on_divergence", f.on_divergence, DIVERGENCE_ACTIONS)
    _check_holdout(f.holdout_parties, cfg.partition.n_parties)
    if f.fraction_evaluate > 0 and cfg.data.val_fraction == 0:
        raise ConfigError(
            "config key 'federation.fraction_evaluate' > 0 needs local validation data: set data.val_fraction in (0, 1)"
        )


def _check_engine(cfg: ExperimentConfig) -> None:
    """``engine.*``: the keys the engine reads, the device, workers and resources,
    client batching (a bare on/off normalised), then the engine's own checks."""
    e = cfg.engine
    plugins.check_keys(cfg, "engine")
    dev = e.device
    if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"config key 'engine.device' = {dev!r} is not allowed; allowed: auto, cpu, cuda, cuda:N, mps")
    _in_range("engine.workers", e.workers, 1, None)
    _in_range("engine.num_cpus", e.num_cpus, 0.0, None, lo_open=True)
    _in_range("engine.num_gpus", e.num_gpus, 0.0, None)
    if e.client_timeout is not None:
        _in_range("engine.client_timeout", e.client_timeout, 0.0, None, lo_open=True)
    _in_range("engine.fault_rate", e.fault_rate, 0.0, 1.0, hi_open=True)
    # YAML 1.1 (and so OmegaConf's override parser) reads a bare on/off as a boolean,
    # which the str field then holds as "True"/"False"
    e.batch_clients = {"True": "on", "False": "off"}.get(e.batch_clients, e.batch_clients)
    _one_of("engine.batch_clients", e.batch_clients, BATCH_CLIENTS)
    if e.batch_clients == "on" and e.workers > 1:
        raise ConfigError(
            "config keys 'engine.batch_clients' = on and 'engine.workers' > 1 exclude each other: batching runs a cohort in one process"
        )
    _in_range("engine.threads", e.threads, 0, None)
    plugins.check_plugins(cfg, "engine")


def _check_eval(cfg: ExperimentConfig) -> None:
    """``eval.*``: central evaluation's ranges, then the parties' own test data."""
    _in_range("eval.batch_size", cfg.eval.batch_size, 1, None)
    _in_range("eval.fbeta", cfg.eval.fbeta, 0.0, None, lo_open=True)
    _in_range("eval.train_sample", cfg.eval.train_sample, 0, None)
    _check_local_test(cfg)


def _check_output(cfg: ExperimentConfig) -> None:
    """``output.*``: checkpoints, then the trackers."""
    _in_range("output.checkpoint_every", cfg.output.checkpoint_every, 0, None)
    _in_range("output.keep_checkpoints", cfg.output.keep_checkpoints, 1, None)
    _check_trackers(cfg)


def _validate_privacy(cfg: ExperimentConfig) -> None:
    """``privacy.*``: the keys the mode reads, their ranges, and the mode against the
    rest of the config (the algorithm: :meth:`fedsim.privacy.modes.PrivacyMode.refuse`)."""
    plugins.check(cfg, "privacy")


def _validate_comm(cfg: ExperimentConfig) -> None:
    """``comm.*``: the compressor's keys, their ranges, the compressor against the
    algorithm (:attr:`strategies.registry.Algorithm.compression_refusal`) and privacy
    (:func:`fedsim.privacy.compat.compression_refusal`)."""
    plugins.check(cfg, "comm")
    if cfg.comm.budget_mb is not None and not cfg.comm.budget_mb > 0:
        raise ConfigError(f"config key 'comm.budget_mb' = {cfg.comm.budget_mb!r} must be > 0 (null: no budget)")
    lossy = plugins.SECTIONS["comm"].registry.get(cfg.comm.compressor).lossy
    if cfg.comm.downlink and not lossy:
        raise ConfigError(
            "comm.downlink compresses the broadcast with comm.compressor, which is 'none': "
            "choose a compressor or set comm.downlink false"
        )
    why = compression_refusal(cfg, cfg.comm.compressor) if lossy else None
    if why:
        raise ConfigError(why)


LOCAL_TEST_MODES = ("none", "split", "match", "natural")


def _check_local_test(cfg: ExperimentConfig) -> None:
    """``eval.local_*``: the mode (``auto`` resolved: split for a personalised algorithm,
    none otherwise), its own keys, and no key the mode does not read."""
    ev = cfg.eval
    personal = strategies.get(cfg.strategy.name).personal
    _one_of("eval.local_test", ev.local_test, ("auto", *LOCAL_TEST_MODES))
    if ev.local_test == "auto":
        ev.local_test = "split" if personal else "none"
    if personal and ev.local_test == "none":
        raise ConfigError(
            f"config key 'eval.local_test' = 'none' with strategy '{cfg.strategy.name}', a personalised algorithm: "
            "its parties' own models are what it trains and the global model alone says little about them; "
            "use split, match or natural (or leave it at its default, auto = split)"
        )
    _in_range("eval.local_test_fraction", ev.local_test_fraction, 0.0, 1.0, lo_open=True, hi_open=True)
    if ev.local_test_size is not None:
        _in_range("eval.local_test_size", ev.local_test_size, 1, None)
    _in_range("eval.local_parties", ev.local_parties, 0, None)
    _in_range("eval.finetune_epochs", ev.finetune_epochs, 0, None)
    readers = {
        "local_test_fraction": ("split",),
        "local_test_size": ("match",),
        "local_parties": LOCAL_TEST_MODES[1:],
        "finetune_epochs": LOCAL_TEST_MODES[1:],
    }
    _only_where_read(ev, "eval", ev.local_test, "eval.local_test", readers)
    if cfg.federation.holdout_parties and ev.local_test == "none":
        raise ConfigError(
            "config key 'federation.holdout_parties' needs each party's own test data to evaluate the "
            "held-out parties on: set eval.local_test (split, match or natural)"
        )


def _check_holdout(value: float, n_parties: int) -> None:
    """``federation.holdout_parties``: a share in [0, 1) or a whole count below the party count."""
    if value < 0 or (value >= 1 and (value != int(value) or value >= n_parties)):
        raise ConfigError(
            f"config key 'federation.holdout_parties' = {value!r}: a share in [0, 1) or a whole number "
            f"of parties from 1 to {n_parties - 1}"
        )
    if 0 < value < 1 and int(round(value * n_parties)) == 0:  # a share that holds out nobody
        raise ConfigError(
            f"config key 'federation.holdout_parties' = {value!r} of {n_parties} parties holds out "
            f"round({value * n_parties:g}) = 0 parties: give a whole count (1) or a share above "
            f"0.5/{n_parties} = {0.5 / n_parties:g}"
        )


def _check_trackers(cfg: ExperimentConfig) -> None:
    """``output.trackers``: known names, each once; a tracker's own keys only with it."""
    out = cfg.output
    dup = sorted({n for n in out.trackers if list(out.trackers).count(n) > 1})
    plugins.check_keys(cfg, "output")
    if dup:
        raise ConfigError(f"config key 'output.trackers' names {', '.join(dup)} twice")
    plugins.check_plugins(cfg, "output")


def validate_attack_and_defence(cfg: ExperimentConfig) -> None:
    """``attack.*`` and ``defence.*``: each against its own dataclass, the malicious
    parties against the federation, and each against the rest of the config."""
    a, n = cfg.attack, cfg.partition.n_parties
    plugins.check_keys(cfg, "attack")
    if isinstance(a, MaliciousParams) and a.parties is not None:
        bad = [p for p in a.parties if not 0 <= p < n]
        if bad:
            raise ConfigError(f"config key 'attack.parties' names {bad}; the parties are 0..{n - 1}")
        if len(set(a.parties)) != len(a.parties):
            raise ConfigError(f"config key 'attack.parties' = {list(a.parties)} names a party twice")
        if a.fraction != type(a)().fraction:
            raise ConfigError("config keys 'attack.fraction' and 'attack.parties' exclude each other: give one")
    plugins.check_plugins(cfg, "attack")
    plugins.check(cfg, "defence")


#: every check, in the order it runs: of several bad keys, the one reported is the first
#: in this order (a section's own keys and ranges before its plug-in's checks, and a
#: section before those that are checked against it)
def _check_target_accuracy(cfg: ExperimentConfig) -> None:
    """``eval.target_accuracy``: a number or a list of numbers in (0, 1], as a sorted list."""
    value = cfg.eval.target_accuracy
    if value is None:
        return
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    ok = values and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1 for v in values)
    if not ok:
        raise ConfigError(
            f"config key 'eval.target_accuracy' = {value!r}; allowed: a number or a list of numbers in (0, 1]"
        )
    cfg.eval.target_accuracy = sorted(float(v) for v in values)


def _check_system(cfg: ExperimentConfig) -> None:
    """``system.*``: the chosen device-profile source's own checks."""
    plugins.check(cfg, "system")


def _check_selection(cfg: ExperimentConfig) -> None:
    """``selection.*``: the chosen selector's keys and checks; a biased selector with
    client-level DP, whose accounting assumes its own Poisson cohort of every party alike."""
    plugins.check(cfg, "selection")
    selector = plugins.SECTIONS["selection"].registry.get(cfg.selection.name)
    if not selector.unbiased and draws_own_cohort(cfg):
        raise ConfigError(
            f"selection.name {cfg.selection.name} with client-level differential privacy: its accounting assumes "
            "a Poisson cohort where every party is equally likely; use selection.name uniform"
        )


def _check_async(cfg: ExperimentConfig) -> None:
    """``asynchronous.*``: the server's keys and their ranges, ``concurrency`` (0: the
    synchronous cohort; at most the parties), and the rest of the config against it."""
    a, n = cfg.asynchronous, cfg.partition.n_parties
    plugins.check_keys(cfg, "asynchronous")
    if a.mode == "off" and a.concurrency != 0:
        raise ConfigError(
            "config key 'asynchronous.concurrency' is read only with asynchronous.mode fedbuff or fedasync, "
            "not 'off': remove it"
        )
    if isinstance(a.concurrency, bool) or not isinstance(a.concurrency, int):
        raise ConfigError(f"config key 'asynchronous.concurrency' = {a.concurrency!r} must be an int")
    _in_range("asynchronous.concurrency", a.concurrency, 0, n)
    if getattr(a, "buffer_size", 1) > n:
        raise ConfigError(
            f"config key 'asynchronous.buffer_size' = {a.buffer_size!r} is out of range; allowed: [1, {n}]"
        )
    plugins.check_plugins(cfg, "asynchronous")


CHECKS: tuple[Callable[[ExperimentConfig], None], ...] = (
    _check_seed,
    _check_data,
    _check_partition,
    _check_model,
    _check_train,
    _check_strategy,
    _check_federation,
    _check_engine,
    _check_eval,
    _check_output,
    _validate_privacy,
    validate_attack_and_defence,
    _check_target_accuracy,
    _check_system,
    _validate_comm,
    _check_selection,
    _check_async,
)


def validate(cfg: ExperimentConfig) -> None:
    """Check every value against its allowed set or range (each of :data:`CHECKS` in
    turn); raise ConfigError."""
    for check in CHECKS:
        check(cfg)
