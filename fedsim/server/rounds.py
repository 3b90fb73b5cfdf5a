"""The round loop: the strategy's rounds from the start's round to ``federation.rounds``
(with ``asynchronous.mode`` other than off: the asynchronous loop's server steps,
``fedsim/asynchronous/loop.py``).

After each aggregation the parties whose replies were aggregated keep the client state
they computed; after each round the :class:`~fedsim.server.recorder.Recorder` records
it. A round whose aggregate is non-finite, or whose cohort mostly returned non-finite
replies, is recorded as the run's divergence; one that failed otherwise stops the run
(resumable from its last checkpoint).
"""

from __future__ import annotations

import gc

from flwr.serverapp import Grid

from fedsim.asynchronous.loop import async_run_of
from fedsim.errors import RunAborted
from fedsim.rundir.store import ClientStateStore
from fedsim.schema.experiment import ExperimentConfig
from fedsim.server.callbacks import nonfinite_majority
from fedsim.server.callbacks.budget import byte_budget_spent
from fedsim.server.recorder import Recorder
from fedsim.server.start import RunStart
from strategies.arrays import state_to_record
from strategies.strategy import CohortFailure, FedsimStrategy, NonFiniteModel, RoundHooks


def has_ended(cfg: ExperimentConfig, start: RunStart, recorder: Recorder) -> bool:
    """Nothing is left to run: every round is done, or a resumed run had stopped (it
    diverged with ``on_divergence: stop``, or its privacy budget was spent)."""
    stopped = recorder.diverged is not None and cfg.federation.on_divergence == "stop"
    stopped = stopped or any(r.get("privacy_stop") for r in start.history)
    # a byte budget's stop holds while the run's budget still stops it (a resume may raise it)
    stopped = stopped or byte_budget_spent(cfg, start.history)
    return stopped or start.start_round > cfg.federation.rounds


def run_rounds(
    grid: Grid,
    cfg: ExperimentConfig,
    strategy: FedsimStrategy,
    start: RunStart,
    recorder: Recorder,
    client_state: ClientStateStore,
) -> None:
    """Run the rounds left (module docstring)."""
    if has_ended(cfg, start, recorder):
        return
    looped = async_run_of(strategy)
    hooks = RoundHooks(
        # only the parties whose replies were aggregated keep the state they computed
        after_aggregate=lambda rl: client_state.commit(rl.round, [o.party for o in rl.outcomes]),
        after_round=recorder,
    )
    if looped is not None:  # each applied update's party, from the round it was sent (its version + 1)
        hooks.after_aggregate = lambda rl: client_state.commit_each(
            (int(o.metrics["version"]) + 1, o.party) for o in rl.outcomes
        )
    # the dataset, models and Flower's modules live for the whole run: keep the cyclic
    # garbage collector from re-scanning them (full collections paused rounds 0.1-0.3 s).
    # Only the young generations are collected first: a full collection of a long-lived
    # process's heap (a test session, an in-process sweep) cost 0.2 s a run, and what
    # old garbage is frozen with the rest is collected after the run's unfreeze
    gc.collect(1)
    gc.freeze()
    timeout = cfg.engine.client_timeout or 3600.0
    try:
        if looped is not None:
            looped.run(grid, strategy, start.state, start.start_round, cfg.federation.rounds, hooks, timeout)
        else:
            strategy.start(
                grid=grid,
                initial_arrays=state_to_record(start.state),
                num_rounds=cfg.federation.rounds,
                timeout=timeout,
                start_round=start.start_round,
                hooks=hooks,
            )
    except NonFiniteModel as exc:
        recorder(strategy.round_log, forced_reason=str(exc).split(": ", 1)[-1])
    except CohortFailure as exc:
        _cohort_failed(strategy, recorder, exc)
    finally:
        client_state.discard_pending()
        recorder.close()
        gc.unfreeze()


def _cohort_failed(strategy: FedsimStrategy, recorder: Recorder, exc: CohortFailure) -> None:
    """A round with more failures than ``federation.max_failure_fraction`` allows: the
    run's divergence when most of its cohort returned non-finite replies, else RunAborted."""
    rl = strategy.round_log
    reason = nonfinite_majority(rl)
    if reason is not None:
        recorder(rl, forced_reason=reason)
        return
    recorder.record_failed_round(rl)
    last = recorder.history[-1]["round"] if recorder.history else 0
    raise RunAborted(f"run stopped: {exc}; resume from round {last} with --resume") from exc
