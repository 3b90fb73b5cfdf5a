"""Engines run the same ServerApp and ClientApp; the registry maps ``engine.name`` to one.

* ``local`` (default): :mod:`fedsim.engine.local`, an in-process Flower Grid;
* ``ray``: :mod:`fedsim.engine.ray`, Flower's own simulation runtime on Ray.

An engine is an :class:`Engine` plug-in (:mod:`fedsim.engine.registry`) with
``run(settings: RunSettings, hooks: RunHooks | None) -> RunOutcome``; the registry
imports the engines' modules on first use, so this package stays light to import.
"""

from __future__ import annotations

from fedsim.engine.registry import ENGINES, Engine, available, get_engine, register, unregister

__all__ = ["ENGINES", "Engine", "available", "get_engine", "register", "unregister"]
