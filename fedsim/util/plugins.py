"""One plug-in mechanism for every extension point of fedsim.

Algorithms, attacks, defences, data sets, models, partition schemes, trackers, engines
and privacy modes are plug-ins: a plug-in is one file that declares

* ``name``: what a config chooses it by (``strategy.name: fedprox``, ``data.dataset: hf``);
* ``summary``: one line saying what it does; ``paper``: where it comes from (a paper, a
  library, a data set's home);
* ``Params``: its config section's dataclass: the keys every plug-in of the kind shares
  (the section's base dataclass) and its own, each declared with
  :func:`fedsim.util.params.hp` (default, allowed range, meaning, source);
* ``check(cfg)``: why the rest of a config cannot run it (None when it can);
* ``reads``: the section's common keys it reads (``synthetic-images`` reads
  ``data.n_train``), for the listings: every plug-in of the kind accepts those;

and registers itself with its kind's :class:`Registry`. Each registry imports every
module of its package the first time it is read (discovery), so a plug-in's file needs
no import line anywhere. Plug-ins outside fedsim's packages are found the same way:
``FEDSIM_PLUGINS`` (an environment variable: modules or packages, comma-separated) and
the ``fedsim.plugins`` entry-point group of installed distributions name modules to
import, a package's modules all of them. Config validation, the ``fedsim plugins``
listings, the README's tables and the did-you-mean errors are made from the
declarations.

This module imports only the standard library and fedsim's leaves (``fedsim.errors``,
:mod:`fedsim.util.params`), so that every package of the distribution, the numpy-only
``partitioners`` too, can build its registry on it.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import itertools
import os
import pkgutil
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from fedsim.errors import ConfigError
from fedsim.util.params import HpField, field_default, hyperparameters, undeclared

T = TypeVar("T")
C = TypeVar("C", bound=type)

#: the environment variable naming plug-in modules or packages outside fedsim
ENV = "FEDSIM_PLUGINS"
#: the entry-point group of installed distributions that carry plug-ins
ENTRY_POINTS = "fedsim.plugins"


class Plugin:
    """What every plug-in declares (the module docstring); each kind's base class
    (``Algorithm``, ``Attack``, ``Dataset``, ``Engine``, ...) adds the hooks the run calls."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type]
    reads: ClassVar[tuple[str, ...]] = ()

    def check(self, cfg: Any) -> str | None:
        """Why ``cfg`` (fedsim's ExperimentConfig) cannot run this plug-in, or None."""
        return None


def close_match(name: Any, names: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest of ``names``, or nothing."""
    close = difflib.get_close_matches(str(name), list(names), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


_EXTRA_LOCK = threading.RLock()
_extra_done: set[str] = set()
_entry_points_read = False


def _import_tree(name: str) -> None:
    """Import module ``name``; a package's modules too (all but ``_private`` ones)."""
    module = importlib.import_module(name)
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if not info.name.startswith("_"):
            importlib.import_module(f"{name}.{info.name}")


def _entry_point_modules() -> list[str]:
    global _entry_points_read
    if _entry_points_read:
        return []
    _entry_points_read = True
    return [ep.value.split(":")[0] for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)]


def load_extra_plugins() -> None:
    """Import the plug-in modules named by ``FEDSIM_PLUGINS`` and the ``fedsim.plugins``
    entry points that are not imported yet (cheap when there is nothing new: every
    registry calls it when read, so a variable set later in the process still counts)."""
    with _EXTRA_LOCK:
        wanted = [(n.strip(), f"{ENV} names") for n in os.environ.get(ENV, "").split(",") if n.strip()]
        found = [(n, f"the {ENTRY_POINTS} entry point names") for n in _entry_point_modules()]
        for name, named in wanted + found:
            if name in _extra_done:
                continue
            _extra_done.add(name)
            try:
                _import_tree(name)
            except ImportError as exc:
                _extra_done.discard(name)
                raise ConfigError(f"{named} '{name}', which cannot be imported: {exc}") from exc


def forget_extra_plugins(name: str) -> None:
    """Import ``name`` again the next time a registry is read (tests that remove theirs)."""
    with _EXTRA_LOCK:
        _extra_done.discard(name)


class Registry(Generic[T]):
    """``name -> plug-in`` of one kind, whose built-in files are the modules of ``package``.

    ``section``: the config section the plug-ins' ``Params`` are (``"data"``) and
    ``chooser`` its key that names the plug-in (``"dataset"``); ``base``: the section's
    dataclass, whose fields every plug-in shares: a ``Params`` must subclass it and
    declare every other field with ``hp``. ``ordered``: ``available()`` in registration
    order (the package's own plug-ins first, modules in ``first`` before the others)
    instead of sorted. ``error``: what an unknown name raises.
    """

    def __init__(
        self,
        kind: str,
        package: str,
        *,
        section: str,
        chooser: str = "name",
        base: type | None = None,
        ordered: bool = False,
        first: Sequence[str] = (),
        error: Callable[[str], Exception] = ValueError,
    ) -> None:
        self.kind, self.package, self.section, self.chooser = kind, package, section, chooser
        self.base, self.ordered, self.first, self.error = base, ordered, tuple(first), error
        self._items: dict[str, T] = {}
        self._origin: dict[str, tuple] = {}  # name -> where it sorts in available() (ordered)
        self._module_of: dict[str, str] = {}
        self._count = itertools.count()
        self._discovered = self._importing = False
        self._lock = threading.RLock()

    # -------------------------------------------------------------- registering
    def register(self, cls: C) -> C:
        """Class decorator: register an instance of ``cls`` under its ``name``."""
        self.add(cls(), cls.__module__)
        return cls

    def add(self, item: T, module: str) -> T:
        """Register a plug-in instance defined in ``module`` (a function-style
        decorator's adapter); TypeError for a declaration that is incomplete."""
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{type(item).__name__}: a {self.kind} needs a name")
        old = self._items.get(name)
        # the same class again (its module imported twice) replaces it; another one is a clash
        if old is not None and (
            type(old) is not type(item) or getattr(old, "fn", None) is not getattr(item, "fn", None)
        ):
            raise ValueError(
                f"{self.kind} '{name}' is already registered (by {self._module_of[name]}; again by {module})"
            )
        self._check_params(name, getattr(item, "Params", None))
        common = {f.name for f in dataclasses.fields(self.base)} if self.base is not None else set()
        strange = [k for k in getattr(item, "reads", ()) if k not in common]
        if strange:
            raise TypeError(f"{self.kind} '{name}' reads {self.section}.{strange[0]}, which is not a common key")
        self._items[name] = item
        self._origin[name] = self._origin.get(name) or self._rank(module)
        self._module_of[name] = module
        return item

    def _check_params(self, name: str, params: Any) -> None:
        if params is None:
            raise TypeError(f"{self.kind} '{name}' declares no Params dataclass")
        if self.base is not None and not issubclass(params, self.base):
            raise TypeError(f"{self.kind} '{name}': Params {params.__name__} must subclass {self.base.__name__}")
        missing = undeclared(params, self.base)
        if missing:
            raise TypeError(
                f"{self.kind} '{name}': {params.__name__}.{missing[0]} is not declared with fedsim.util.params.hp(...)"
            )
        if self.base is not None:  # a common key declared again keeps the common default
            common = {f.name: field_default(f) for f in dataclasses.fields(self.base)}
            for h in hyperparameters(params):
                if h.name in common and common[h.name] != h.default:
                    raise TypeError(
                        f"{self.kind} '{name}' declares {self.section}.{h.name} with default {h.default!r}; "
                        f"{self.base.__name__} has {common[h.name]!r}"
                    )

    def _rank(self, module: str) -> tuple:
        """Where a plug-in of ``module`` sorts when ``ordered``: the package's own first, by
        their module's place in ``first`` (then by module name), then the others; within a
        module in registration order. Not by import order, which another registry's
        discovery or a user's plug-in importing a built-in module can change."""
        own = module == self.package or module.startswith(self.package + ".")
        leaf = module[len(self.package) + 1 :].split(".")[0] if own else module
        place = self.first.index(leaf) if own and leaf in self.first else len(self.first)
        return (0 if own else 1, place, leaf, next(self._count))

    def unregister(self, name: str) -> None:
        """Remove a plug-in (tests that define their own)."""
        self._items.pop(name, None)
        self._origin.pop(name, None)
        self._module_of.pop(name, None)

    # ---------------------------------------------------------------- reading
    def _discover(self) -> None:
        # other threads wait until the package is imported; the importing thread itself
        # (a plug-in module that reads the registry while it loads) sees what is there so far
        if not self._discovered:
            with self._lock:
                if not self._discovered and not self._importing:
                    self._importing = True
                    try:
                        package = importlib.import_module(self.package)
                        found = [m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]
                        for name in [m for m in self.first if m in found] + sorted(set(found) - set(self.first)):
                            importlib.import_module(f"{self.package}.{name}")
                        self._discovered = True
                    finally:
                        self._importing = False
        load_extra_plugins()

    def available(self) -> list[str]:
        """The names: sorted, or in registration order (``ordered``)."""
        self._discover()
        if self.ordered:
            return sorted(self._items, key=lambda n: self._origin[n])
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.available())

    def unknown(self, name: Any) -> str:
        """The error text for a name no plug-in has, with the nearest one."""
        names = self.available()
        return f"unknown {self.kind} '{name}'{close_match(name, names)}; allowed: {', '.join(sorted(names))}"

    def get(self, name: str) -> T:
        self._discover()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self.error(self.unknown(name)) from None

    def is_builtin(self, name: str) -> bool:
        """Whether ``name`` comes from the registry's own package (not a user's)."""
        self._discover()
        return self._origin.get(name, (1, 0))[0] == 0

    # ------------------------------------------------------------ declarations
    def own(self, name: str) -> list[HpField]:
        """The parameters plug-in ``name`` declares (its ``Params``' ``hp`` fields)."""
        return hyperparameters(self.get(name).Params)  # type: ignore[attr-defined]

    def declarers(self) -> dict[str, list[str]]:
        """Every key some plug-in declares -> those plug-ins, in ``available()`` order."""
        out: dict[str, list[str]] = {}
        for name in self.available():
            for h in self.own(name):
                out.setdefault(h.name, []).append(name)
        return out

    def declared_default(self, key: str) -> Any:
        """The default the first plug-in declaring ``key`` gives it."""
        for name in self.available():
            for h in self.own(name):
                if h.name == key:
                    return h.default
        raise KeyError(key)
