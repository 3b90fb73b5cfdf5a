"""fedsim: a Flower-native simulator for federated learning research on non-IID data."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["run", "sweep", "load_config", "RunResult", "__version__"]


def __getattr__(name: str):
    # Lazy: `import fedsim` stays cheap (no torch, no flwr) for the CLI's --help and
    # for the partitioners, which only need fedsim.config.
    if name in ("run", "RunResult"):
        from . import api

        return getattr(api, name)
    if name == "sweep":
        # the package fedsim.sweep, callable as its function sweep(); import_module, not
        # `from . import sweep`, which would ask this __getattr__ again
        import importlib

        return importlib.import_module(".sweep", __name__)
    if name == "load_config":
        from .config import load_config

        return load_config
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")
