"""The Flower ServerApp: the run's federation, from the initial model to ``summary.json``.

:func:`run_server` builds the initial model and the strategy, finds which node holds
which partition, resumes from the last verified checkpoint when asked, and runs the
strategy's round loop with two hooks: after each aggregation the parties whose replies
were aggregated keep their new client state, and after each round the
:class:`~fedsim.server.recorder.Recorder` evaluates, records and checkpoints. At the end it
writes ``model.pt``, ``summary.json`` and the plots, and returns the outcome to the
engine (no re-reading from disk).
"""

from __future__ import annotations

import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

import strategies
from fedsim.config.load import config_hash, yaml_keys
from fedsim.errors import RunAborted, RunDirError
from fedsim.models import build_model
from fedsim.prepare.adversary import server_rules
from fedsim.prepare.flwr_app import quiet_flower, settings_from_context
from fedsim.prepare.preflight import open_run
from fedsim.prepare.run_inputs import Experiment, RunSettings, apply_determinism, experiment_for, resolve_device
from fedsim.privacy.run import privacy_for
from fedsim.rundir.checkpoint import latest_checkpoint, save_checkpoint
from fedsim.rundir.plots import plot_run
from fedsim.rundir.store import ClientStateStore, atomic_torch_save, atomic_write_json, check_client_writes
from fedsim.server.callbacks import RunProgress, nonfinite_majority, round_callbacks
from fedsim.server.evaluation import CentralEvaluator
from fedsim.server.party_eval import PartyEvaluator
from fedsim.server.recorder import Recorder
from fedsim.server.summary import build_summary
from fedsim.util.seeding import derive, seed_torch
from strategies.arrays import state_to_record
from strategies.strategy import CohortFailure, FederationSetup, NonFiniteModel, RoundHooks

log = logging.getLogger(__name__)


@dataclass
class RunHooks:
    """Callbacks of the process that started the run (the CLI's progress bar)."""

    on_open: Callable[[Path], None] | None = None  # the run directory, checked and prepared
    on_start: Callable[[int, int], None] | None = None  # (start_round, rounds)
    on_round: Callable[[dict], None] | None = None  # the metrics row
    on_note: Callable[[str], None] | None = None  # a line about the run's settings, before it starts


@dataclass
class RunOutcome:
    """What a run produced: its summary and its metrics rows (as written to disk)."""

    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------ discovery


def discover_partitions(grid: Grid, n_parties: int, timeout: float = 600.0) -> dict[int, int]:
    """party id -> node id.

    The local engine knows its mapping; on Flower's runtimes node ids are opaque,
    so every node is asked once (a ``query`` message) which partition it holds.
    """
    mapping = getattr(grid, "node_of_party", None)
    if mapping is not None:
        return dict(mapping)
    deadline = time.time() + timeout
    while len(list(grid.get_node_ids())) < n_parties and time.time() < deadline:
        time.sleep(0.2)
    node_ids = list(grid.get_node_ids())
    msgs = [
        Message(
            RecordDict({"config": ConfigRecord({"ask": "partition-id"})}), dst_node_id=n, message_type=MessageType.QUERY
        )
        for n in node_ids
    ]
    replies = grid.send_and_receive(msgs, timeout=timeout)
    out: dict[int, int] = {}
    for r in replies:
        if r.has_content():
            pid = int(r.content["metrics"]["partition-id"])
            out[pid] = r.metadata.src_node_id
    if len(out) != n_parties:
        raise RuntimeError(f"found {len(out)} of {n_parties} partitions among {len(node_ids)} nodes")
    return out


# ------------------------------------------------------------------------ main


def initial_state(exp: Experiment) -> OrderedDict[str, torch.Tensor]:
    """The global model before round 1, from (seed, "init")."""
    b = exp.bundle
    seed_torch(derive(exp.cfg.seed, "init"))
    model = build_model(exp.cfg.model, b.input_shape, b.num_classes)
    return OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())


def run_server(grid: Grid, settings: RunSettings, hooks: RunHooks | None = None) -> RunOutcome:
    """Run the whole federation on ``grid`` in the prepared run directory (see
    :func:`fedsim.prepare.preflight.open_run`); returns its summary and history."""
    t0 = time.perf_counter()
    exp = experiment_for(settings)
    cfg, store = exp.cfg, exp.store
    hooks = hooks or RunHooks()
    apply_determinism(cfg)
    if cfg.engine.threads > 0:
        torch.set_num_threads(cfg.engine.threads)
    device = resolve_device(cfg.engine.device)
    node_of_party = discover_partitions(grid, cfg.partition.n_parties)
    evaluator = CentralEvaluator(exp, device)
    # differential privacy (privacy.mode): a part of the strategy's round and its ledger
    privacy = privacy_for(cfg, lambda: exp.dataidxs, exp.holdout)
    # the hyperparameters as the run uses them (a robust aggregator's f from the attack),
    # composed with an attack's model poisoning, then a defence (fedsim/prepare/adversary.py),
    # then privacy, in that order
    params, _ = strategies.resolve(cfg)
    strategy = strategies.build(params, (*server_rules(cfg), *((privacy,) if privacy is not None else ())))
    strategy.bind(
        FederationSetup(
            seed=cfg.seed,
            node_of_party=node_of_party,
            fraction_fit=cfg.federation.fraction_fit,
            fraction_evaluate=cfg.federation.fraction_evaluate,
            min_fit_clients=cfg.federation.min_fit_clients,
            max_failure_fraction=cfg.federation.max_failure_fraction,
            param_keys=frozenset(n for n, p in evaluator.model.named_parameters() if p.requires_grad),
            device=str(device),
            holdout=frozenset(exp.holdout),
            # a full disk is the run's failure, not the clients'
            check_failures=check_client_writes,
            # one sample and data.val_fraction: nothing to validate on (preflight said so)
            no_validation=frozenset(
                p for p, idx in exp.dataidxs.items() if cfg.data.val_fraction > 0 and len(idx) <= 1
            ),
        )
    )
    client_state = ClientStateStore(store.client_state)
    history: list[dict] = []
    start_round, wall_offset = 1, 0.0
    state = initial_state(exp)
    ckpt = latest_checkpoint(store) if settings.resume else None
    if ckpt is not None:
        if ckpt.config_hash and ckpt.config_hash != config_hash(cfg, yaml_keys(store.config)):
            raise RunDirError(
                f"checkpoint '{ckpt.path}' was made with another config; resume with the run's own config.yaml"
            )
        state = OrderedDict(ckpt.arrays)
        strategy.load_state_dict(ckpt.strategy)
        history = ckpt.history
        start_round, wall_offset = ckpt.round + 1, ckpt.wall_time_s
        store.truncate_records(ckpt.round, history)
        client_state.restore(ckpt.path / "client_state")
        log.info("resuming from %s (round %d)", ckpt.path, ckpt.round)
    else:
        # a fresh start (or nothing to resume from): clean records, empty client state,
        # and a round-0 checkpoint so that even a run stopped in round 1 can resume
        store.truncate_records(0, [])
        client_state.clear()
        if cfg.output.checkpoint_every:
            save_checkpoint(
                store,
                0,
                state,
                strategy.state_dict(),
                [],
                time.perf_counter() - t0,
                config_hash(cfg),
                cfg.output.keep_checkpoints,
            )
    client_state.discard_pending()
    run = RunProgress(history, wall_offset + (time.perf_counter() - t0), last_state=state)
    parties = PartyEvaluator(exp, device, client_state) if exp.local_test is not None else None
    callbacks = round_callbacks(exp, run, strategy, evaluator, parties, privacy, hooks.on_round, settings.tracking)
    recorder = Recorder(run, callbacks)
    if hooks.on_start:
        hooks.on_start(start_round, cfg.federation.rounds)
    # the dataset, models and Flower's modules live for the whole run: keep the cyclic
    # garbage collector from re-scanning them (full collections paused rounds 0.1-0.3 s).
    # Only the young generations are collected first: a full collection of a long-lived
    # process's heap (a test session, an in-process sweep) cost 0.2 s a run, and what
    # old garbage is frozen with the rest is collected after the run's unfreeze
    gc.collect(1)
    gc.freeze()
    round_hooks = RoundHooks(
        # only the parties whose replies were aggregated keep the state they computed
        after_aggregate=lambda rl: client_state.commit(rl.round, [o.party for o in rl.outcomes]),
        after_round=recorder,
    )
    stopped = recorder.diverged is not None and cfg.federation.on_divergence == "stop"
    stopped = stopped or any(r.get("privacy_stop") for r in history)
    if start_round <= cfg.federation.rounds and not stopped:
        try:
            strategy.start(
                grid=grid,
                initial_arrays=state_to_record(state),
                num_rounds=cfg.federation.rounds,
                timeout=cfg.engine.client_timeout or 3600.0,
                start_round=start_round,
                hooks=round_hooks,
            )
        except NonFiniteModel as exc:
            recorder(strategy.round_log, forced_reason=str(exc).split(": ", 1)[-1])
        except CohortFailure as exc:
            rl = strategy.round_log
            reason = nonfinite_majority(rl)
            if reason is not None:
                recorder(rl, forced_reason=reason)
            else:
                recorder.record_failed_round(rl)
                last = history[-1]["round"] if history else 0
                raise RunAborted(f"run stopped: {exc}; resume from round {last} with --resume") from exc
        finally:
            client_state.discard_pending()
            recorder.close()
            gc.unfreeze()
    final = recorder.last_state if recorder.last_state is not None else state
    atomic_torch_save(store.model, {k: v.detach().cpu() for k, v in final.items()})
    summary = build_summary(exp, history, recorder.wall_time(), final, recorder.diverged)
    atomic_write_json(store.summary, summary)
    if cfg.output.plots:
        plot_run(store)
    recorder.finish(summary)
    return RunOutcome(summary, history)


def make_server_app(
    settings: RunSettings | None = None,
    hooks: RunHooks | None = None,
    on_done: Callable[[RunOutcome], None] | None = None,
) -> ServerApp:
    """A ServerApp bound to ``settings`` (fedsim's engines, which prepared the run
    directory and receive the outcome through ``on_done``), or reading them from
    ``context.run_config`` (``flwr run .``, which prepares the directory here)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if settings is not None:
            outcome = run_server(grid, settings, hooks)
            if on_done is not None:
                on_done(outcome)
            return
        # `flwr run .`: no fedsim front end has checked the input or made the directory
        quiet_flower()
        s = settings_from_context(context)
        with open_run(s.config, Path(s.run_dir), resume=s.resume, overwrite=False) as opened:
            if opened.done is None:
                run_server(grid, s, hooks)

    return app


#: the app `flwr run .` loads (see [tool.flwr.app.components] in pyproject.toml)
server_app = make_server_app()
