"""The round's checkpoint (``output.checkpoint_every``, the run's last round, the last
before a stop): the records made durable first, then the global model, the strategy's
server state (its extensions' too), the history and the client state
(:mod:`fedsim.rundir.checkpoint`).

What the next round changes is taken on the round loop's thread (the arrays, the
strategy's state, the history, the generators, links to the client state:
:func:`~fedsim.rundir.checkpoint.stage_checkpoint`); the fsyncs of the records,
``torch.save``, the manifest, the rename and the pruning run on a writer thread while
the next round trains (benchmarks/peers.py, the round loop's share of a checkpoint,
median of interleaved runs: 1000x10 6.1 -> 0.65 ms wall, 3.4 -> 0.65 ms CPU; 100x100
4.7 -> 0.8 ms wall, 3.3 -> 0.8 ms CPU; the run's last write, 4-10 ms, is waited for once
at its end. Rounds got 0.5-2.4% shorter, medians of 6-8 interleaved pairs, inside the
+-5% run-to-run noise of 2 shared cores: the writer's Python work still takes the GIL).
The writer is waited for before the next checkpoint and when the round loop ends,
however it ends (:meth:`on_close`), and its error stops the run there as a synchronous
write's would have. A kill while it writes leaves the previous checkpoint, which a
resume uses, cutting the records back to it.
"""

from __future__ import annotations

from fedsim.rundir.checkpoint import BackgroundWriter, StagedCheckpoint, stage_checkpoint, write_staged
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
        self.writer = BackgroundWriter()

    def on_round(self, rec: RoundRecord) -> None:
        if not rec.due(self.cfg.output.checkpoint_every, self.cfg.federation.rounds):
            return
        self.writer.wait()  # the previous checkpoint is complete; its error stops the run here
        staged = stage_checkpoint(
            self.store,
            rec.log.round,
            rec.state,
            self.strategy.state_dict(),
            self.run.history,
            self.run.wall_time(),
            self.hash,
            self.cfg.output.keep_checkpoints,
        )
        self.writer.submit(lambda: self._write(staged))

    def _write(self, staged: StagedCheckpoint) -> None:
        # the records up to this round are durable before the checkpoint that ends at it
        # (rows the next round has appended by then are synced too: a resume cuts them)
        self.store.sync_records()
        write_staged(staged)

    def on_close(self, exc: BaseException | None) -> None:
        """The run ends or stops: its last checkpoint is complete before anything else
        (the summary, a resume's checks) looks at the run directory."""
        self.writer.close()
