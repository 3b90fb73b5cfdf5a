"""``flwr run .``: fedsim's apps under Flower's own CLI and SuperLink.

``server_app`` and ``client_app`` are the apps ``flwr run .`` loads: unlike the engines'
apps (bound to settings that fedsim's front end checked and prepared), they read the
settings from Flower's Context, and the server app checks the input and opens the run
directory itself.

``pyproject.toml`` names the apps (``[tool.flwr.app.components]``) and a default
run config (``[tool.flwr.app.config]``)::

    config    = "configs/quickstart.yaml"   # a fedsim experiment YAML
    overrides = ""                          # space-separated key=value, e.g. "federation.rounds=5"
    run-dir   = ""                          # default: runs/flwr-<run id>
    resume    = false

``flwr run . --run-config 'overrides="partition.beta=0.1" run-dir="/abs/out"'``
changes them; ``--federation-config "num-supernodes=10"`` must equal
``partition.n_parties``. Relative paths are resolved against the Flower app's
directory (where ``flwr run`` installed the app), so an absolute ``run-dir`` is the
clearest choice.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim.client.app import make_client_app
from fedsim.config.load import load_config
from fedsim.inputs.run_inputs import RunSettings
from fedsim.prepare.preflight import open_run
from fedsim.server.app import run_server
from fedsim.util.flower_logs import quiet_flower


def app_dir() -> Path:
    """The root of the app: the directory holding the fedsim package."""
    return Path(__file__).resolve().parents[1]


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else app_dir() / p


_SETTINGS: dict[int, RunSettings] = {}


def settings_from_context(context: Any) -> RunSettings:
    """The settings of ``flwr run .``, from Flower's Context (pyproject's run config);
    parsed once per run and process (every message of the run carries the same)."""
    hit = _SETTINGS.get(context.run_id)
    if hit is None:
        hit = _SETTINGS[context.run_id] = settings_from_flwr_run_config(context.run_config, context.run_id)
    return hit


def settings_from_flwr_run_config(run_config: Mapping[str, Any], run_id: int | None = None) -> RunSettings:
    cfg = load_config(
        _resolve(str(run_config.get("config", "configs/quickstart.yaml"))),
        shlex.split(str(run_config.get("overrides", ""))),
    )
    run_dir = str(run_config.get("run-dir", "") or "")
    if not run_dir:
        run_dir = f"runs/flwr-{run_id if run_id is not None else 'run'}"
    return RunSettings(cfg, str(_resolve(run_dir)), bool(run_config.get("resume", False)))


#: the server app `flwr run .` loads (see [tool.flwr.app.components] in pyproject.toml)
server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    # no fedsim front end has checked the input or made the directory
    quiet_flower()
    s = settings_from_context(context)
    with open_run(s.config, Path(s.run_dir), resume=s.resume, overwrite=False) as opened:
        if opened.done is None:
            run_server(grid, s)


#: the client app `flwr run .` loads; every message's settings come from its Context
client_app = make_client_app(settings_from_context)
