"""Before a run: everything that can refuse the input, then the run directory's first files.

:func:`open_run` is the one way into a run directory, for the Python API and for
``flwr run .``: it checks the directory (ours? :mod:`fedsim.rundir.ownership`), a resume (the
run's own config and partition), the input (the data set loads, the partition can be
made, the model fits in memory, the Ray head answers) before writing anything, then
takes the directory's lock and writes ``config.yaml``, ``dataidxs.npz``,
``partition.json`` and the label plot, once.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import partitioners
import strategies
from fedsim import trackers
from fedsim.config.load import (
    ExperimentConfig,
    config_diff,
    config_hash,
    load_config,
    merge_into_saved,
    partition_params,
    to_yaml,
    yaml_keys,
)
from fedsim.errors import ConfigError, RunDirError
from fedsim.models import build_model, has_batchnorm
from fedsim.prepare.adversary import check_attack_data
from fedsim.prepare.localtest import LocalTest
from fedsim.prepare.resources import check_model_fits
from fedsim.prepare.run_inputs import compute_partition, holdout_parties, load_bundle, read_dataidxs, resolve_device
from fedsim.privacy import compat as privacy_compat
from fedsim.privacy.accounting import DELTA_SHARE, default_delta
from fedsim.privacy.run import PrivacyRun
from fedsim.rundir import ownership as rundir
from fedsim.rundir.checkpoint import latest_checkpoint
from fedsim.rundir.store import RunStore, atomic_write_json, atomic_write_text, read_json
from fedsim.util.ray_address import check_reachable
from strategies.strategy import from_portable

log = logging.getLogger(__name__)


def saved_config(store: RunStore) -> ExperimentConfig:
    """The config a run directory was started with."""
    try:
        return load_config(store.config)
    except ConfigError as exc:
        raise RunDirError(f"'{store.config}' is not a valid fedsim config ({exc})") from exc


def check_resume(cfg: ExperimentConfig, store: RunStore) -> str | None:
    """Whether ``cfg`` may continue the run in ``store``: a note saying why there is
    nothing left to do (finished, or ended as diverged), None when it may go on.

    The config must be the run's own, except for what does not change a run's identity
    (engine placement, failure tolerances, output) and ``federation.rounds``, which may
    be raised to train a finished run on. The partition file must be the config's.
    """
    if not store.config.exists():
        return None  # nothing was written yet: a fresh start
    saved = saved_config(store)
    diff = config_diff(saved, cfg)
    if diff:
        raise RunDirError(
            f"--resume: the config differs from the one '{store.root}' was started with in {'; '.join(diff[:4])}"
            f"{' and more' if len(diff) > 4 else ''}; resume with its config.yaml"
        )
    if store.dataidxs.exists():
        check_partition_file(cfg, store)
    ckpt = latest_checkpoint(store, warn=False)  # the resume itself says which checkpoint it falls back from
    if ckpt is not None and ckpt.config_hash and ckpt.config_hash != config_hash(cfg, yaml_keys(store.config)):
        raise RunDirError(
            f"--resume: checkpoint '{ckpt.path}' was made with another config than '{store.config}'; "
            "resume with the run's own config.yaml"
        )
    if not store.summary.exists():
        return None
    summary = read_json(store.summary, "summary")
    done = int(summary.get("rounds") or 0)
    if summary.get("status") == "diverged":
        return f"ended as diverged in round {summary.get('diverged_round')}; nothing to resume"
    if summary.get("privacy_stop"):
        return f"stopped at privacy.target_epsilon after {done} rounds ({summary['privacy_stop']}); nothing to resume"
    if cfg.federation.rounds < done:
        raise RunDirError(
            f"--resume: federation.rounds={cfg.federation.rounds} is below the {done} rounds the run has done; "
            "a run can be extended, not shortened"
        )
    if cfg.federation.rounds == done:
        return f"already finished after {done} rounds; nothing to do (raise federation.rounds to train on)"
    log.info("extending the run in '%s' from %d to %d rounds", store.root, done, cfg.federation.rounds)
    return None


def check_partition_file(cfg: ExperimentConfig, store: RunStore) -> None:
    """RunDirError unless the run's dataidxs.npz is the partition ``cfg`` describes."""
    try:
        meta = partitioners.read_dataidxs_meta(store.dataidxs)
    except ValueError as exc:
        raise RunDirError(str(exc)) from exc
    want = {"scheme": cfg.partition.scheme, "seed": cfg.seed, "n_parties": cfg.partition.n_parties}
    for key, value in want.items():
        if meta[key] != value:
            raise RunDirError(
                f"--resume: '{store.dataidxs}' was made with {key}={meta[key]!r}, the config asks for {value!r}; "
                "resume with the run's own config"
            )
    params = {k: v for k, v in partition_params(cfg).items() if not hasattr(v, "shape")}
    for key, value in params.items():
        if key in meta["params"] and meta["params"][key] != value:
            raise RunDirError(
                f"--resume: '{store.dataidxs}' was made with partition.{key}={meta['params'][key]!r}, "
                f"the config asks for {value!r}; resume with the run's own config"
            )


def check_trackers_installed(cfg: ExperimentConfig) -> None:
    """ConfigError naming the extra when a chosen tracker's library is not installed."""
    for name in trackers.chosen(cfg.output):
        t = trackers.get(name)
        if t.module and importlib.util.find_spec(t.module) is None:
            raise ConfigError(f"output.trackers: {name} needs {t.module}: pip install 'fedsim[{t.extra}]'")


def check_runnable(cfg: ExperimentConfig, store: RunStore, resume: bool):
    """Everything that can fail on the user's input, before anything is written.

    Loads the dataset (missing files), partitions it (impossible parameters) unless a
    resumed run brings its own dataidxs, and builds the model (a CNN on tabular data).
    """
    resolve_device(cfg.engine.device)
    if cfg.engine.name == "ray" and cfg.engine.ray_address:
        check_reachable(cfg.engine.ray_address)
    if cfg.output.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("output.tensorboard: true needs tensorboard: pip install 'fedsim[tensorboard]'")
    check_trackers_installed(cfg)
    bundle = load_bundle(cfg)
    partition = None if (resume and store.dataidxs.exists()) else compute_partition(cfg, bundle)
    if partition is not None:  # a resumed run keeps the partition it was started with
        check_party_sizes(cfg, partition[0])
    check_model_fits(cfg.model, bundle.input_shape, bundle.num_classes)
    check_attack_data(cfg, bundle)
    model = build_model(cfg.model, bundle.input_shape, bundle.num_classes)
    problem = strategies.get(cfg.strategy.name).check_model(cfg.strategy, model)
    if problem:
        raise ConfigError(problem)
    if cfg.privacy.mode != "none":
        sizes = read_dataidxs(store, bundle.y_train.numpy()) if partition is None else partition[0]
        held = set(holdout_parties(cfg.federation.holdout_parties, cfg.partition.n_parties, cfg.seed))
        check_privacy(
            cfg,
            model,
            {k: len(v) for k, v in sizes.items() if k not in held},
            fresh=partition is not None,
            store=store if resume else None,
        )
    return partition


def check_party_sizes(cfg: ExperimentConfig, dataidxs: dict[int, np.ndarray]) -> None:
    """Parties that cannot do what the config asks of them, before anything is written.

    A party without training samples has nothing to train on (its update was NaN, and
    the run reported a divergence in round 1): refused, naming the parties. With local
    validation (``data.val_fraction``, ``federation.fraction_evaluate``) a party of one
    sample has no validation sample: it is left out of the evaluation cohorts, said
    once; when no party has one, the config is refused.
    """
    sizes = {p: int(np.asarray(idx).size) for p, idx in dataidxs.items()}
    empty = sorted(p for p, n in sizes.items() if n == 0)
    if empty:
        shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
        raise ConfigError(
            f"partition.scheme '{cfg.partition.scheme}' gives {len(empty)} of {len(sizes)} parties no training "
            f"sample (parties {shown}): an empty party has nothing to train on; raise partition.min_size "
            "(dirichlet, quantity-skew) or beta, or use fewer parties"
        )
    if cfg.data.val_fraction > 0 and cfg.federation.fraction_evaluate > 0:
        held = set(holdout_parties(cfg.federation.holdout_parties, cfg.partition.n_parties, cfg.seed))
        evaluating = [p for p in sizes if p not in held]
        single = sorted(p for p in evaluating if sizes[p] <= 1)
        if single and len(single) == len(evaluating):
            raise ConfigError(
                f"data.val_fraction={cfg.data.val_fraction:g} gives no party a validation sample (each has one "
                "sample, which it trains on): federation.fraction_evaluate would evaluate nothing; use larger "
                "parties (fewer of them) or federation.fraction_evaluate=0"
            )
        if single:
            log.warning(
                "data.val_fraction=%g: %d of %d parties have one sample and no validation sample: they are "
                "left out of the evaluation cohorts",
                cfg.data.val_fraction,
                len(single),
                len(evaluating),
            )


def check_privacy(
    cfg: ExperimentConfig, model, party_sizes: dict[int, int], fresh: bool, store: RunStore | None = None
) -> None:
    """``privacy.*`` beyond the config: the extra is installed, the model has no
    BatchNorm, delta is below 1/N, the noise can be calibrated and one round fits the
    budget; a resume (``store``) that could not stay within the budget with the
    checkpoint's ledger is refused."""
    problem = privacy_compat.why_not(cfg, strategies.get(cfg.strategy.name), has_batchnorm(model))
    if problem:
        raise ConfigError(problem)
    for module, what in (("dp_accounting", "Google's dp-accounting"), ("opacus", "Opacus")):
        if module == "opacus" and cfg.privacy.mode not in privacy_compat.PER_SAMPLE:
            continue
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"privacy.mode {cfg.privacy.mode!r} needs {what}: pip install 'fedsim[privacy]'")
    try:
        run = PrivacyRun(cfg, party_sizes)
        ckpt = latest_checkpoint(store, warn=False) if store is not None and not fresh else None
        if ckpt is not None and "__privacy__" in ckpt.strategy:
            run.load_state_dict(from_portable(ckpt.strategy["__privacy__"]))
            run.check_resume(ckpt.history)
    except ValueError as exc:  # Flower's adaptive noise split with a calibrated sigma
        raise ConfigError(f"privacy: {exc}") from exc
    if fresh or ckpt is None:
        run.check_start()
    n = run.population
    if cfg.privacy.target_delta is not None and cfg.privacy.target_delta > DELTA_SHARE / n:
        log.warning(
            "privacy.target_delta=%g is not well below 1/N = %.3g (N = %d %s): the guarantee may fail outright "
            "with about that probability, so epsilon says little; the default is %.3g",
            cfg.privacy.target_delta,
            1.0 / n,
            n,
            run.population_what,
            default_delta(n),
        )
    if run.sigma == 0:
        log.warning(
            "privacy.noise_multiplier=0 adds no noise: nothing is private and epsilon is infinite "
            "(recorded as epsilon null, epsilon_infinite true)"
        )


def write_partition(
    out: Path,
    dataidxs: dict[int, np.ndarray],
    labels: np.ndarray,
    num_classes: int | None,
    cfg: ExperimentConfig,
    dataset: str,
    plot: Path | None,
    local_test: LocalTest | None = None,
) -> dict:
    """``dataidxs.npz`` and ``partition.json`` (the class counts and heterogeneity
    measures) in ``out``, and the label-distribution plot at ``plot``: the same files
    for a run directory and for ``fedsim partition``. Returns the measures."""
    params = partition_params(cfg)
    partitioners.save_dataidxs(
        out / "dataidxs.npz",
        dataidxs,
        labels,
        cfg.partition.scheme,
        params,
        cfg.seed,
        local_test.indices if local_test else None,
        local_test.source if local_test else "",
    )
    het = partitioners.heterogeneity(labels, dataidxs, num_classes=num_classes)
    if local_test is not None:
        sizes = [int(local_test.indices.get(j, np.empty(0)).size) for j in range(len(dataidxs))]
        het["local_test"] = {"mode": cfg.eval.local_test, "source": local_test.source, "sizes": sizes}
    noise = cfg.data.feature_noise
    atomic_write_json(
        out / "partition.json",
        {
            "scheme": cfg.partition.scheme,
            "params": params,
            "seed": cfg.seed,
            "dataset": dataset,
            "feature_noise": noise,
            "noise_levels": partitioners.noise_levels(noise, cfg.partition.n_parties).tolist() if noise > 0 else None,
            **het,
        },
    )
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        partitioners.plot_label_distribution(het["class_counts"], plot, title=partition_title(cfg, dataset))
    return het


def partition_title(cfg: ExperimentConfig, dataset: str) -> str:
    """``synthetic-images: dirichlet(beta=0.5), 10 parties``."""
    shown = {
        k: v
        for k, v in partition_params(cfg).items()
        if isinstance(v, (int, float, str)) and k not in ("min_size", "max_redraws")
    }
    params = ", ".join(f"{k}={v}" for k, v in shown.items())
    return f"{dataset}: {cfg.partition.scheme}{f'({params})' if params else ''}, {cfg.partition.n_parties} parties"


def prepare_run_dir(
    cfg: ExperimentConfig, store: RunStore, partition: tuple[dict[int, np.ndarray], LocalTest | None] | None = None
) -> None:
    """Write ``config.yaml`` (the resolved config of this start: a resume may raise the
    rounds or the tolerances) and, on a fresh start, the partition files. A resumed
    run keeps its ``dataidxs.npz``, checked against the data set's labels."""
    bundle = load_bundle(cfg)
    labels = bundle.y_train.numpy()
    # a resume changes only what this start changes: the saved keys stay the run's own
    atomic_write_text(store.config, merge_into_saved(cfg, store.config) if store.config.exists() else to_yaml(cfg))
    if store.dataidxs.exists():
        read_dataidxs(store, labels)
        return
    dataidxs, local_test = partition if partition is not None else compute_partition(cfg, bundle)
    plot = store.plots / "label_distribution.png" if cfg.output.plots else None
    write_partition(store.root, dataidxs, labels, bundle.num_classes, cfg, cfg.data.dataset, plot, local_test)


@dataclass
class OpenedRun:
    """A run directory checked, locked and prepared; ``done`` says why nothing is left to run."""

    store: RunStore
    done: str | None = None


@contextmanager
def open_run(cfg: ExperimentConfig, run_dir: Path, *, resume: bool, overwrite: bool) -> Iterator[OpenedRun]:
    """Check, lock and prepare ``run_dir`` for ``cfg`` (module docstring); the lock is
    held until the ``with`` block ends."""
    store = RunStore(run_dir)
    # everything that can refuse the input is checked before anything is written (not
    # even the lock file), then again under the lock (another process may have moved on)
    rundir.claim(run_dir, "run", resume=resume, overwrite=overwrite, check_only=True)
    note = check_resume(cfg, store) if resume else None
    if note is not None:
        yield OpenedRun(store, note)
        return
    partition = check_runnable(cfg, store, resume)
    with rundir.DirLock(run_dir, "run"):
        note = check_resume(cfg, store) if resume else None
        if note is not None:
            yield OpenedRun(store, note)
            return
        rundir.claim(run_dir, "run", resume=resume, overwrite=overwrite)
        prepare_run_dir(cfg, store, partition)
        yield OpenedRun(store)
