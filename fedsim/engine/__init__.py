"""Engines run the same ServerApp and ClientApp; the registry maps ``engine.name`` to one.

* ``local`` (default): :mod:`fedsim.engine.local`, an in-process Flower Grid;
* ``ray``: :mod:`fedsim.engine.ray`, Flower's own simulation runtime on Ray.

An engine is ``run(settings: RunSettings, hooks: RunHooks | None) -> RunOutcome``.
"""

from __future__ import annotations

from collections.abc import Callable

from fedsim.engine.local import run_local
from fedsim.engine.ray import run_ray
from fedsim.prepare.run_inputs import RunSettings
from fedsim.server.app import RunHooks, RunOutcome

Engine = Callable[[RunSettings, "RunHooks | None"], RunOutcome]

ENGINES: dict[str, Engine] = {"local": run_local, "ray": run_ray}


def get_engine(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine '{name}'; allowed: {', '.join(sorted(ENGINES))}") from None
