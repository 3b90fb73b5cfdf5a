"""The plug-ins as ``fedsim plugins`` lists them and the README tables them, from their
declarations (name, summary, paper, ``Params``, ``reads``): nothing here is written by hand.

A kind is named as the CLI names it (``datasets``, ``schemes``, ...) and maps to the
config section its plug-ins extend (:data:`fedsim.config.plugins.SECTIONS`).
"""

from __future__ import annotations

from fedsim.config import plugins
from fedsim.errors import ConfigError
from fedsim.util.params import HpField, fmt
from fedsim.util.plugins import close_match

#: kind (as ``fedsim plugins KIND`` takes it) -> its config section
KINDS = {
    "strategies": "strategy",
    "attacks": "attack",
    "defences": "defence",
    "datasets": "data",
    "schemes": "partition",
    "models": "model",
    "engines": "engine",
    "trackers": "output",
    "privacy-modes": "privacy",
    "system-sources": "system",
    "compressors": "comm",
    "selectors": "selection",
    "async-servers": "asynchronous",
}


def _section(kind: str) -> plugins.Section:
    if kind not in KINDS:
        raise ConfigError(
            f"unknown kind of plug-in '{kind}'{close_match(kind, list(KINDS))}; allowed: {', '.join(KINDS)}"
        )
    return plugins.SECTIONS[KINDS[kind]]


def _chooser(sec: plugins.Section, name: str) -> str:
    return f"{sec.key(sec.chooser)}: [{name}]" if sec.many else f"{sec.key(sec.chooser)}={name}"


def _param_line(sec: plugins.Section, h: HpField) -> str:
    return f"  {sec.key(h.name)} = {fmt(h.default)}  ({h.allowed()})  {h.info.help}; default: {h.info.source}"


def describe(kind: str, name: str) -> list[str]:
    """The lines of one plug-in: how to choose it, what it does, its source, its own keys
    (default, allowed, meaning, source) and the common keys it reads."""
    sec = _section(kind)
    plugin = sec.registry.get(name)
    lines = [f"{_chooser(sec, name)}: {plugin.summary}"]
    if plugin.paper and plugin.paper != "-":
        lines.append(f"  {plugin.paper}")
    own = sec.registry.own(name)
    lines += [_param_line(sec, h) for h in own] or ["  (no keys of its own)"]
    if plugin.reads:
        lines.append(f"  reads the common keys {', '.join(sec.key(k) for k in plugin.reads)}")
    return lines


def listing(kind: str | None = None, name: str | None = None) -> str:
    """``fedsim plugins``: every kind with its plug-ins' names and summaries; with ``kind``
    each plug-in of it in full (:func:`describe`); with ``name`` that one."""
    if kind is None:
        out = []
        for k in KINDS:
            sec = _section(k)
            out.append(f"{k} ({sec.key(sec.chooser)}):")
            out += [f"  {n}: {sec.registry.get(n).summary}" for n in sec.registry.available()]
        return "\n".join(out) + "\n"
    sec = _section(kind)
    names = sec.registry.available()
    if name is not None:
        if name not in names:
            raise ConfigError(sec.registry.unknown(name))
        names = [name]
    return "\n".join("\n".join(describe(kind, n)) + "\n" for n in names)


def _cell(sec: plugins.Section, name: str) -> str:
    own = [f"`{h.name}` ({fmt(h.default)}, {h.allowed()})" for h in sec.registry.own(name)]
    reads = [f"`{k}`" for k in sec.registry.get(name).reads]
    cell = "; ".join(own) or "-"
    return cell + (f"; reads {', '.join(reads)}" if reads else "")


def table_markdown(kind: str) -> str:
    """The README's table of one kind: every plug-in, what it does, its keys, its source."""
    sec = _section(kind)
    head = f"| `{sec.key(sec.chooser)}` | what it does | `{sec.name}.*` of its own (default, allowed) | source |"
    lines = [head, "| --- | --- | --- | --- |"]
    for name in sec.registry.available():
        p = sec.registry.get(name)
        lines.append(f"| `{name}` | {p.summary} | {_cell(sec, name)} | {p.paper or '-'} |".replace("||", "‖"))
    return "\n".join(lines) + "\n"
