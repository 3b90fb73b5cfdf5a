"""The engine registry: ``engine.name`` -> an :class:`Engine` plug-in that runs the
ServerApp and ClientApp of one run.

An engine is one file of this package (found on first use: no import line anywhere)
with an :class:`Engine` subclass decorated with :func:`register`::

    @register
    class MyEngine(Engine):
        name = "my-engine"
        summary = "..."
        paper = "..."
        Params = MyEngineParams       # engine.* with it: EngineConfig's keys + its own

        def run(self, settings, hooks):  # -> RunOutcome
            ...

This module stays light (no Flower, no server): the config's validation reads the
registry, and the engines' own modules, which import the whole run, load on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedsim.schema.sections import EngineConfig
from fedsim.util.plugins import Plugin, Registry


class Engine(Plugin):
    """One engine: ``run(settings, hooks) -> RunOutcome`` (fedsim.inputs.run_inputs.RunSettings,
    fedsim.server.app.RunHooks and RunOutcome; not imported here, which the server imports)."""

    Params: type = EngineConfig

    def run(self, settings: Any, hooks: Any = None) -> Any:
        raise NotImplementedError


#: the engines: the modules of fedsim/engine (sorted by name)
ENGINES: Registry[Engine] = Registry("engine", "fedsim.engine", section="engine", base=EngineConfig)


def register(cls: type[Engine]) -> type[Engine]:
    """Class decorator: make an engine available to ``engine.name``."""
    return ENGINES.register(cls)


def unregister(name: str) -> None:
    """Remove an engine (tests that register their own)."""
    ENGINES.unregister(name)


def available() -> list[str]:
    return ENGINES.available()


def get_engine(name: str) -> Callable[..., Any]:
    """The run function of engine ``name``: ``(settings, hooks) -> RunOutcome``."""
    return ENGINES.get(name).run
