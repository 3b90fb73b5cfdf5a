"""fedsim: a Flower-native simulator for federated learning research on non-IID data."""

from __future__ import annotations

from fedsim.version import __version__

__all__ = ["run", "sweep", "tune", "load_config", "RunResult", "__version__"]


def __getattr__(name: str):
    # PEP 562 lazy attributes: `import fedsim` (and so every `fedsim.x` submodule
    # import, and `fedsim --help`) stays cheap, without torch or Flower; the API's
    # modules load on first use. These are the package's only deferred imports of its
    # own modules (docs/architecture.md).
    if name in ("run", "RunResult"):
        from fedsim import api

        return getattr(api, name)
    if name == "sweep":
        from fedsim.sweeps import sweep

        return sweep
    if name == "tune":
        from fedsim.tuning import tune

        return tune
    if name == "load_config":
        from fedsim.config.load import load_config

        return load_config
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")
