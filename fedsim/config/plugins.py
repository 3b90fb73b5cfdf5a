"""The config sections that plug-ins extend: which plug-in a config chooses, which keys
it may write, and the checks its declarations make.

Eleven sections choose plug-ins: ``strategy.name``, ``attack.name``, ``defence.name``,
``data.dataset``, ``partition.scheme``, ``model.name``, ``engine.name``,
``privacy.mode``, ``system.source``, ``comm.compressor``, ``selection.name``, ``asynchronous.mode`` (one each) and ``output.trackers`` (a list). A section's dataclass is
the chosen plug-in's ``Params`` (for trackers, the chosen trackers' together): the
section's common keys and the plug-in's own, declared with ``hp``. So the keys a user
may write, their ranges and the did-you-mean errors all come from the declarations.

Two ways to treat the key of a plug-in that is not chosen:

* ``strategy.*``, ``attack.*``, ``defence.*`` (*strict*): an error, even at its
  default, as it has always been (``strategy 'fedavg' has no parameter 'strategy.mu'``);
* the other sections: accepted at its default (configs and every saved ``config.yaml``
  have always spelled such keys out: ``data.hf_path: null`` with ``mnist``), an error
  naming the plug-ins that read it otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import attacks.registry
import strategies.registry
from fedsim.asynchronous.servers import ASYNC_SERVERS
from fedsim.comm.codecs import COMPRESSORS
from fedsim.data.registry import DATASETS
from fedsim.engine.registry import ENGINES
from fedsim.errors import ConfigError
from fedsim.models.registry import MODELS
from fedsim.privacy.modes import PRIVACY_MODES
from fedsim.system.sources import SOURCES
from fedsim.trackers.base import TRACKERS
from fedsim.util.params import field_default, out_of_range
from fedsim.util.plugins import Registry, close_match
from partitioners.registry import SCHEMES
from strategies.defences import DEFENCES
from strategies.selection import SELECTORS


@dataclass(frozen=True)
class Section:
    """How one config section chooses its plug-ins (module docstring)."""

    registry: Registry
    strict: bool = False
    many: bool = False

    @property
    def name(self) -> str:
        return self.registry.section

    @property
    def chooser(self) -> str:
        return self.registry.chooser

    def key(self, leaf: str) -> str:
        return f"{self.name}.{leaf}"


SECTIONS: dict[str, Section] = {
    s.name: s
    for s in (
        Section(DATASETS),
        Section(SCHEMES),
        Section(MODELS),
        Section(strategies.registry.ALGORITHMS, strict=True),
        Section(attacks.registry.ATTACKS, strict=True),
        Section(DEFENCES, strict=True),
        Section(ENGINES),
        Section(TRACKERS, many=True),
        Section(PRIVACY_MODES),
        Section(SOURCES),
        Section(COMPRESSORS),
        Section(SELECTORS),
        Section(ASYNC_SERVERS),
    )
}


# ------------------------------------------------------------------ the choice


def _default_choice(sec: Section) -> Any:
    base = sec.registry.base
    assert base is not None
    return next(field_default(f) for f in dataclasses.fields(base) if f.name == sec.chooser)


def _check_name(sec: Section, name: Any) -> None:
    allowed = sorted(sec.registry.available())
    key = sec.key(sec.chooser)
    if not isinstance(name, str):
        raise ConfigError(f"config key '{key}' = {name!r} must be a string; allowed: {', '.join(allowed)}")
    if name not in allowed:
        raise ConfigError(
            f"config key '{key}' = {name!r} is not allowed{close_match(name, allowed)}; allowed: {', '.join(allowed)}"
        )


def chosen(sec: Section, *trees: Mapping[str, Any]) -> list[str]:
    """The plug-ins a config chooses in section ``sec`` (later trees win), each checked
    against the registry: one name, or the trackers of ``output.trackers`` (with
    ``tensorboard`` for ``output.tensorboard: true``)."""
    written = [t.get(sec.name) or {} for t in trees if isinstance(t, Mapping)]
    value = _default_choice(sec)
    for part in written:
        if isinstance(part, Mapping) and sec.chooser in part:
            value = part[sec.chooser]
    if not sec.many:
        _check_name(sec, value)
        return [value]
    names = list(value) if isinstance(value, (list, tuple)) else []
    for name in names:
        _check_name(sec, name)
    if any(isinstance(p, Mapping) and p.get("tensorboard") is True for p in written) and "tensorboard" not in names:
        names.append("tensorboard")
    return names


@cache
def _combined(classes: tuple[type, ...]) -> type:
    """The dataclass with the fields of all ``classes`` (several trackers' own keys)."""

    @dataclasses.dataclass
    class Combined(*classes):  # type: ignore[misc]
        def __reduce__(self) -> tuple:  # picklable (spawned workers, Ray) though built here
            return (_rebuild, (classes, {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}))

    Combined.__name__ = Combined.__qualname__ = "+".join(c.__name__ for c in classes)
    return Combined


def _rebuild(classes: tuple[type, ...], values: dict[str, Any]) -> Any:
    return _combined(classes)(**values)


def section_class(sec: Section, names: list[str]) -> type:
    """The dataclass of section ``sec`` for these chosen plug-ins."""
    base = sec.registry.base
    assert base is not None
    # a plug-in whose Params add no field (built-in trackers, which only declare common
    # keys as their own) needs no class of its own here
    classes = [sec.registry.get(n).Params for n in names]
    common = {f.name for f in dataclasses.fields(base)}
    adding = list(dict.fromkeys(c for c in classes if {f.name for f in dataclasses.fields(c)} - common))
    if not sec.many:
        return classes[0]
    if not adding:
        return base
    return adding[0] if len(adding) == 1 else _combined(tuple(adding))


def instance(sec: Section, names: list[str]) -> Any:
    """Section ``sec``'s dataclass for ``names`` at its defaults."""
    cls = section_class(sec, names)
    return cls() if sec.many else cls(**{sec.chooser: names[0]})


# ------------------------------------------------------------- the keys written


def _readers(sec: Section, names: list[str], readers: list[str]) -> str:
    if sec.many:
        return f"read only with {sec.key(sec.chooser)} containing {' or '.join(readers)}: add the tracker or remove the key"
    return f"read only with {sec.key(sec.chooser)} {' or '.join(readers)}, not {names[0]!r}: remove it"


def screen(sec: Section, names: list[str], tree: Mapping[str, Any]) -> dict[str, Any]:
    """``tree``'s section ``sec`` without the keys of plug-ins not chosen that sit at
    their default (non-strict sections); ConfigError for any other key the section's
    dataclass lacks: another plug-in's (naming the plug-ins that read it) or none's
    (with the nearest key)."""
    part = tree.get(sec.name)
    if not isinstance(part, Mapping):
        return dict(tree)
    fields = [f.name for f in dataclasses.fields(section_class(sec, names))]
    declared = sec.registry.declarers()
    kept = {}
    for key, value in part.items():
        if key in fields:
            kept[key] = value
            continue
        readers = declared.get(str(key))
        if readers and not sec.strict:
            if value == sec.registry.declared_default(key):
                continue
            raise ConfigError(f"config key '{sec.key(key)}' is {_readers(sec, names, readers)}")
        raise ConfigError(_unknown_key(sec, names, str(key), fields, list(declared)))
    return {**tree, sec.name: kept}


def _unknown_key(sec: Section, names: list[str], key: str, fields: list[str], declared: list[str]) -> str:
    if sec.strict:  # the wording algorithms, attacks and defences have always had
        own = [h.name for h in sec.registry.own(names[0])]
        has = ", ".join(own) if own else "none"
        return (
            f"{sec.registry.kind} '{names[0]}' has no parameter '{sec.key(key)}'{close_match(key, own)}; "
            f"its parameters: {has}"
        )
    hint = close_match(sec.key(key), [sec.key(k) for k in dict.fromkeys(fields + declared)])
    return f"unknown config key '{sec.key(key)}'{hint}; valid keys of {sec.name}: {', '.join(sorted(fields))}"


def keys() -> dict[str, type]:
    """Every dotted key of the plug-in sections -> its section dataclass's field type
    (each plug-in's own keys included: they are valid with that plug-in only)."""
    out: dict[str, type] = {}
    for sec in SECTIONS.values():
        classes = [sec.registry.base] + [sec.registry.get(n).Params for n in sec.registry.available()]
        for cls in classes:
            for f in dataclasses.fields(cls):
                out.setdefault(sec.key(f.name), f.type)
    return out


# -------------------------------------------------- checks of the loaded config


def _names(cfg: Any, name: str) -> list[str]:
    sec, values = SECTIONS[name], getattr(cfg, name)
    if sec.many:
        names = list(values.trackers)
        if values.tensorboard and "tensorboard" not in names:
            names.append("tensorboard")
    else:
        names = [getattr(values, sec.chooser)]
    for n in names:
        _check_name(sec, n)
    return names


def check_keys(cfg: Any, name: str) -> None:
    """The plug-in section ``name`` of a loaded config: its plug-ins are registered, no
    other plug-in's key is away from its default, the chosen plug-ins' own keys in range."""
    sec, values = SECTIONS[name], getattr(cfg, name)
    names = _names(cfg, name)
    mine = {h.name for n in names for h in sec.registry.own(n)}
    for key, readers in sec.registry.declarers().items():
        if key in mine or not hasattr(values, key) or any(r in names for r in readers):
            continue
        if getattr(values, key) != sec.registry.declared_default(key):
            raise ConfigError(f"config key '{sec.key(key)}' is {_readers(sec, names, readers)}")
    for n in names:
        problem = out_of_range(_as(sec.registry.get(n).Params, values), name, sec.registry.kind, n, _choice_words(sec))
        if problem:
            raise ConfigError(problem)


def _choice_words(sec: Section) -> str:
    # algorithms, attacks and defences have always said "out of range" for a value not among the choices
    return "is out of range" if sec.strict else "is not allowed"


def check_plugins(cfg: Any, name: str) -> None:
    """Each chosen plug-in's ``check(cfg)``: why the rest of the config cannot run it."""
    sec = SECTIONS[name]
    for n in _names(cfg, name):
        problem = sec.registry.get(n).check(cfg)
        if problem:
            raise ConfigError(problem)


def check(cfg: Any, name: str) -> None:
    """:func:`check_keys`, then :func:`check_plugins`."""
    check_keys(cfg, name)
    check_plugins(cfg, name)


def _as(cls: type, values: Any) -> Any:
    """``values`` as an instance of ``cls`` (the plug-in's own params) for range checks."""
    if type(values) is cls:
        return values
    # a section built in Python as its base dataclass lacks a new plug-in's keys: their defaults
    return cls(**{f.name: getattr(values, f.name, field_default(f)) for f in dataclasses.fields(cls) if f.init})
