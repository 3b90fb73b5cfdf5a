"""Engines run the same ServerApp and ClientApp (DESIGN.md, decision 2).

* ``local`` (default): :mod:`fedsim.engine.local`, an in-process Flower Grid;
* ``ray``: :mod:`fedsim.engine.ray`, Flower's own simulation runtime on Ray.
"""

from __future__ import annotations

from typing import Callable

ENGINES: dict[str, str] = {"local": "fedsim.engine.local:run_local", "ray": "fedsim.engine.ray:run_ray"}


def get_engine(name: str) -> Callable:
    import importlib

    if name not in ENGINES:
        raise ValueError(f"unknown engine '{name}'; allowed: {', '.join(sorted(ENGINES))}")
    module, attr = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), attr)
