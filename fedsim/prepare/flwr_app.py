"""``flwr run .``: fedsim's apps under Flower's own CLI and SuperLink.

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

import logging
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedsim.config.load import load_config
from fedsim.prepare.run_inputs import RunSettings


def quiet_flower() -> None:
    """Flower logs every round at INFO on its own handler; fedsim records rounds itself.

    Its logger is set to WARNING unless fedsim's own logger is at DEBUG.
    """
    if not logging.getLogger("fedsim").isEnabledFor(logging.DEBUG):
        logging.getLogger("flwr").setLevel(logging.WARNING)


def app_dir() -> Path:
    """The root of the app: the directory holding the fedsim package."""
    return Path(__file__).resolve().parents[2]


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
