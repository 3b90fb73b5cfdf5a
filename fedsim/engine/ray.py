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
import socket

log = logging.getLogger(__name__)


def backend_config(cfg) -> dict:
    """Flower's BackendConfig for the Ray backend from ``engine.*``.

    Without ``engine.ray_address`` the run gets a private local Ray (``address="local"``):
    a bare ``ray.init()`` would join whatever cluster ``/tmp/ray/ray_current_cluster`` or
    ``RAY_ADDRESS`` names, and retry a dead head's GCS for ever.
    """
    init_args: dict = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False,
                       "address": cfg.engine.ray_address or "local"}
    return {
        "client_resources": {"num_cpus": float(cfg.engine.num_cpus), "num_gpus": float(cfg.engine.num_gpus)},
        "init_args": init_args,
    }


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConfigError unless the Ray head at ``address`` (``host:port``, or ``auto``: the
    cluster Ray last started on this machine) accepts a connection within ``timeout``."""
    from ..errors import ConfigError

    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or _current_cluster() or ""
        if not address:
            raise ConfigError("engine.ray_address=auto: no Ray cluster was started on this machine; start one with "
                              "'ray start --head' or leave engine.ray_address unset for a private local Ray")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"config key 'engine.ray_address' = {address!r} must be host:port (e.g. 10.0.0.5:6379) or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray head at {address} ({exc.strerror or exc}): start it there with "
                          f"'ray start --head --port={port}', or leave engine.ray_address unset for a private local Ray") from None


def _current_cluster() -> str | None:
    """The address in Ray's ``ray_current_cluster`` file, if any."""
    import tempfile

    path = os.path.join(os.environ.get("RAY_TMPDIR", tempfile.gettempdir()), "ray", "ray_current_cluster")
    try:
        with open(path) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


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
