"""``engine.name = ray``: Flower's own simulation runtime on Ray.

The same ServerApp and ClientApp as the local engine run through Flower's
Simulation Engine with its Ray backend: each client is executed by a Ray actor
(``engine.num_cpus`` / ``engine.num_gpus`` per client, fractions allowed), and
``engine.ray_address`` joins an existing cluster (``ray start --head`` on one
machine, ``ray start --address=HEAD:6379`` on the others). The apps are bound to
the run's settings, and Ray ships them to the actors; each actor process loads the
dataset once and keeps it for every message it serves (fedsim's per-process cache).

Flower's ``run_simulation`` (deprecated for the ``flwr run`` CLI in 1.42) and
the ``flwr-simulation`` process both call ``_run_simulation``; fedsim calls it too,
so that a run started from Python needs no SuperLink process.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def backend_config(cfg) -> dict:
    """Flower's BackendConfig for the Ray backend from ``engine.*``."""
    init_args: dict = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    if cfg.engine.ray_address:
        init_args["address"] = cfg.engine.ray_address
    return {
        "client_resources": {"num_cpus": float(cfg.engine.num_cpus), "num_gpus": float(cfg.engine.num_gpus)},
        "init_args": init_args,
    }


def run_ray(settings, hooks=None) -> None:
    """Run ``settings``' experiment on Flower's Simulation Engine (Ray backend)."""
    try:
        import ray
        from flwr.simulation.run_simulation import _run_simulation
        from flwr.supercore.telemetry import EventType
    except ImportError as exc:  # pragma: no cover - flwr[simulation] is a dependency
        from ..errors import ConfigError

        raise ConfigError("engine.name 'ray' needs Flower's simulation extra: pip install 'flwr[simulation]'") from exc

    from ..client import make_client_app
    from ..experiment import experiment_for
    from ..server import make_server_app

    cfg = experiment_for(settings).cfg
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    started_here = not ray.is_initialized()
    try:
        _run_simulation(
            num_supernodes=cfg.partition.n_parties,
            exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=make_client_app(settings),
            server_app=make_server_app(settings, hooks),
            backend_name="ray",
            backend_config=backend_config(cfg),
        )
    finally:
        if started_here and ray.is_initialized():
            ray.shutdown()
