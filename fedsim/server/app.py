"""The Flower ServerApp: the run's federation, from the initial model to ``summary.json``.

:func:`run_server` is the server's way through a run, one step per module: the process
and its device (:mod:`fedsim.inputs.run_inputs`), the nodes and the strategy composed
with the run's extensions (:mod:`fedsim.server.federation`), the start or the resume
(:mod:`fedsim.server.start`), the round callbacks that record each round
(:mod:`fedsim.server.callbacks`), the round loop (:mod:`fedsim.server.rounds`) and the
final files (:mod:`fedsim.server.summary`), whose outcome goes to the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim.inputs.run_inputs import RunSettings, experiment_for, set_up_torch
from fedsim.privacy.run import privacy_for
from fedsim.rundir.store import ClientStateStore
from fedsim.server.callbacks import RunProgress, round_callbacks
from fedsim.server.evaluation import CentralEvaluator
from fedsim.server.federation import build_strategy
from fedsim.server.party_eval import PartyEvaluator
from fedsim.server.recorder import Recorder
from fedsim.server.rounds import run_rounds
from fedsim.server.start import initial_state, start_or_resume
from fedsim.server.summary import RunOutcome, finish_run

__all__ = ["RunHooks", "RunOutcome", "initial_state", "make_server_app", "run_server"]


@dataclass
class RunHooks:
    """Callbacks of the process that started the run (the CLI's progress bar)."""

    on_open: Callable[[Path], None] | None = None  # the run directory, checked and prepared
    on_start: Callable[[int, int], None] | None = None  # (start_round, rounds)
    on_round: Callable[[dict], None] | None = None  # the metrics row
    on_note: Callable[[str], None] | None = None  # a line about the run's settings, before it starts


def run_server(grid: Grid, settings: RunSettings, hooks: RunHooks | None = None) -> RunOutcome:
    """Run the whole federation on ``grid`` in the prepared run directory (see
    :func:`fedsim.prepare.preflight.open_run`); returns its summary and history."""
    t0 = time.perf_counter()
    hooks = hooks or RunHooks()
    exp = experiment_for(settings)
    cfg = exp.cfg
    device = set_up_torch(cfg)
    evaluator = CentralEvaluator(exp, device)
    privacy = privacy_for(cfg, lambda: exp.dataidxs, lambda: exp.holdout)
    strategy = build_strategy(grid, exp, evaluator.model, device, privacy)
    client_state = ClientStateStore(exp.store.client_state)
    start = start_or_resume(exp, strategy, client_state, settings.resume, t0)
    run = RunProgress(start.history, start.wall_offset + (time.perf_counter() - t0), last_state=start.state)
    parties = PartyEvaluator(exp, device, client_state) if exp.local_test is not None else None
    callbacks = round_callbacks(exp, run, strategy, evaluator, parties, privacy, hooks.on_round, settings.tracking)
    recorder = Recorder(run, callbacks)
    if hooks.on_start:
        hooks.on_start(start.start_round, cfg.federation.rounds)
    run_rounds(grid, cfg, strategy, start, recorder, client_state)
    return finish_run(exp, recorder)


def make_server_app(
    settings: RunSettings,
    hooks: RunHooks | None = None,
    on_done: Callable[[RunOutcome], None] | None = None,
) -> ServerApp:
    """A ServerApp bound to ``settings`` that fedsim's front end checked and whose run
    directory it prepared (the engines); the outcome goes to ``on_done``. ``flwr run .``
    loads :data:`fedsim.flwr_apps.server_app` instead."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        outcome = run_server(grid, settings, hooks)
        if on_done is not None:
            on_done(outcome)

    return app
