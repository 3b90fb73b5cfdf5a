"""Whether a config may continue the run in a directory (``--resume``), checked before
anything is written: the run's own config (``federation.rounds`` may be raised, engine
placement, tolerances and output may change), its partition file, its checkpoint, and
whether anything is left to do."""

from __future__ import annotations

import logging

import partitioners
from fedsim.config.load import load_config
from fedsim.errors import ConfigError, RunDirError
from fedsim.rundir.checkpoint import latest_checkpoint
from fedsim.rundir.store import RunStore, read_json
from fedsim.schema.experiment import ExperimentConfig
from fedsim.schema.identity import config_diff
from fedsim.server.start import check_checkpoint_config
from partitioners.registry import partition_params

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
    if ckpt is not None:
        check_checkpoint_config(cfg, store, ckpt)
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
