"""Where the round loop starts: round 1 from the seed's model, or the round after the
last verified checkpoint on resume.

A fresh start cleans the records and the client state and writes a round-0
checkpoint, so that even a run stopped in round 1 can resume; a resume restores the
global model, the strategy's server state (its extensions' too: the privacy ledger, a
defence's state), the history, the records and the client state of its checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from fedsim.errors import RunDirError
from fedsim.inputs.run_inputs import Experiment
from fedsim.models import build_model
from fedsim.rundir.checkpoint import Checkpoint, latest_checkpoint, save_checkpoint
from fedsim.rundir.store import ClientStateStore, RunStore
from fedsim.schema.experiment import ExperimentConfig
from fedsim.schema.identity import config_hash, yaml_keys
from fedsim.util.seeding import derive, seed_torch
from strategies.strategy import FedsimStrategy

log = logging.getLogger(__name__)


def check_checkpoint_config(cfg: ExperimentConfig, store: RunStore, ckpt: Checkpoint) -> None:
    """RunDirError unless the checkpoint was made with ``cfg`` (its hash over the run's
    own keys, those of its ``config.yaml``; an older checkpoint without one passes)."""
    if ckpt.config_hash and ckpt.config_hash != config_hash(cfg, yaml_keys(store.config)):
        raise RunDirError(
            f"--resume: checkpoint '{ckpt.path}' was made with another config than '{store.config}'; "
            "resume with the run's own config.yaml"
        )


@dataclass
class RunStart:
    """The state the round loop starts from."""

    state: OrderedDict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    start_round: int = 1
    #: seconds the run took before this start (a resume's)
    wall_offset: float = 0.0


def initial_state(exp: Experiment) -> OrderedDict[str, torch.Tensor]:
    """The global model before round 1, from (seed, "init")."""
    b = exp.bundle
    seed_torch(derive(exp.cfg.seed, "init"))
    model = build_model(exp.cfg.model, b.input_shape, b.num_classes)
    return OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())


def start_or_resume(
    exp: Experiment, strategy: FedsimStrategy, client_state: ClientStateStore, resume: bool, t0: float
) -> RunStart:
    """The run's start (module docstring); ``t0``: when this process began the run."""
    cfg, store = exp.cfg, exp.store
    state = initial_state(exp)
    ckpt = latest_checkpoint(store) if resume else None
    if ckpt is not None:
        check_checkpoint_config(cfg, store, ckpt)  # preflight checked it too: the server keeps its own guard
        strategy.load_state_dict(ckpt.strategy)
        store.truncate_records(ckpt.round, ckpt.history)
        client_state.restore(ckpt.path / "client_state")
        log.info("resuming from %s (round %d)", ckpt.path, ckpt.round)
        start = RunStart(OrderedDict(ckpt.arrays), ckpt.history, ckpt.round + 1, ckpt.wall_time_s)
    else:
        # a fresh start (or nothing to resume from): clean records, empty client state,
        # and a round-0 checkpoint so that even a run stopped in round 1 can resume
        store.truncate_records(0, [])
        client_state.clear()
        if cfg.output.checkpoint_every:
            elapsed = time.perf_counter() - t0
            save_checkpoint(
                store, 0, state, strategy.state_dict(), [], elapsed, config_hash(cfg), cfg.output.keep_checkpoints
            )
        start = RunStart(state)
    client_state.discard_pending()
    return start
