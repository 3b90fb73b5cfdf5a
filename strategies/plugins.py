"""The mechanism behind the plug-in registries of algorithms, defences and attacks.

A plug-in is a class with a ``name`` and a ``Params`` dataclass (every field declared
with :func:`strategies.params.hp`); its file registers it with ``@register``. Every
module of the registry's package is imported once, the first time the registry is
read, so a plug-in's file needs no import line anywhere.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

from .params import hyperparameters

T = TypeVar("T")
C = TypeVar("C", bound=type)


class Registry(Generic[T]):
    """``name -> instance`` of the plug-ins of one kind (``"strategy"``, ``"attack"``, ...)
    whose files are the modules of the package ``package``."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind, self.package = kind, package
        self._items: dict[str, T] = {}
        self._discovered = False

    def register(self, cls: C) -> C:
        """Class decorator: register an instance of ``cls`` under its ``name``."""
        item = cls()
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
        if name in self._items and type(self._items[name]) is not cls:
            raise ValueError(
                f"{self.kind} '{name}' is registered twice ({type(self._items[name]).__module__} and {cls.__module__})"
            )
        hyperparameters(item.Params)  # every field declared with hp(): fails at import, not at run time
        self._items[name] = item
        return cls

    def unregister(self, name: str) -> None:
        """Remove a plug-in (tests that define their own)."""
        self._items.pop(name, None)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for mod in pkgutil.iter_modules(importlib.import_module(self.package).__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")

    def available(self) -> list[str]:
        self._discover()
        return sorted(self._items)

    def get(self, name: str) -> T:
        self._discover()
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} '{name}'; allowed: {', '.join(self.available())}") from None
