"""The round's checkpoint (``output.checkpoint_every``, the run's last round, the last
before a stop): the records made durable first, then the global model, the strategy's
server state (its extensions' too), the history and the client state
(:func:`fedsim.rundir.checkpoint.save_checkpoint`)."""

from __future__ import annotations

from fedsim.rundir.checkpoint import save_checkpoint
from fedsim.rundir.store import RunStore
from fedsim.schema.experiment import ExperimentConfig
from fedsim.schema.identity import config_hash, yaml_keys
from fedsim.server.callbacks.base import RoundCallback, RoundRecord, RunProgress
from strategies.strategy import FedsimStrategy


class Checkpoints(RoundCallback):
    def __init__(self, cfg: ExperimentConfig, store: RunStore, strategy: FedsimStrategy, run: RunProgress) -> None:
        self.cfg, self.store, self.strategy, self.run = cfg, store, strategy, run
        # over the run's own keys (config.yaml): a run an older fedsim started keeps its hash
        self.hash = config_hash(cfg, yaml_keys(store.config) if store.config.exists() else None)

    def on_round(self, rec: RoundRecord) -> None:
        if not rec.due(self.cfg.output.checkpoint_every, self.cfg.federation.rounds):
            return
        self.store.sync_records()
        save_checkpoint(
            self.store,
            rec.log.round,
            rec.state,
            self.strategy.state_dict(),
            self.run.history,
            self.run.wall_time(),
            self.hash,
            self.cfg.output.keep_checkpoints,
        )
