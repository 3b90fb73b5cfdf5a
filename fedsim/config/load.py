"""Typed experiment configuration: YAML + dotted overrides -> validated ExperimentConfig.

The schema is a tree of dataclasses used as an OmegaConf structured config, so YAML
files get interpolation (``${train.lr}``) and type conversion for free. Validation
happens in two steps before anything runs:

1. every key the user wrote is checked against the schema (:mod:`fedsim.schema.experiment`), the
   keys of the sections that choose a plug-in (``strategy.*``, ``data.*``, ``output.*``, ...)
   against the chosen plug-ins' own dataclasses (:mod:`fedsim.config.plugins`), and an
   unknown key names the nearest valid one (``data.datset`` -> "did you mean data.dataset?");
2. every value is checked against its allowed set or range (:mod:`fedsim.config.validate`).

Errors are :class:`~fedsim.errors.ConfigError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedsim.config import plugins
from fedsim.config.validate import validate
from fedsim.errors import ConfigError
from fedsim.schema.experiment import ExperimentConfig
from fedsim.schema.identity import to_dict
from fedsim.util.trees import flatten
from fedsim.util.yaml_file import load_yaml_mapping

# --------------------------------------------------------------------------- keys


def _schema_keys(cls: type = ExperimentConfig, prefix: str = "") -> dict[str, Any]:
    """Every dotted key of the schema -> its dataclass field type (a section's class, or a
    leaf's annotation as written, which the error messages name)."""
    keys: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)  # the sections' classes, from their string annotations
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        section = hints[f.name]
        if isinstance(section, type) and dataclasses.is_dataclass(section):
            keys[dotted] = section
            keys.update(_schema_keys(section, dotted + "."))
        else:
            keys[dotted] = f.type
    return keys


def all_keys() -> list[str]:
    """All valid dotted leaf keys, e.g. ``train.lr``; the sections that choose plug-ins
    list every plug-in's own keys (each is valid only with its own plug-in)."""
    schema = _schema_keys()
    keys = [
        k
        for k, t in schema.items()
        if not (isinstance(t, type) and dataclasses.is_dataclass(t)) and k.split(".")[0] not in plugins.SECTIONS
    ]
    return keys + sorted(set(plugins.keys()) - set(keys))


def _check_known_keys(tree: Any, prefix: str = "") -> None:
    """Raise ConfigError for the first key of ``tree`` that the schema lacks (the plug-in
    sections' keys are checked against the chosen plug-ins: :func:`fedsim.config.plugins.screen`)."""
    schema = _schema_keys()
    if not isinstance(tree, Mapping):
        return
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if dotted not in schema:
            candidates = [k for k in schema if k.count(".") == dotted.count(".")]
            close = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            section = prefix.rstrip(".") or "the top level"
            raise ConfigError(
                f"unknown config key '{dotted}'{hint}; valid keys of {section}: "
                + ", ".join(sorted(k[len(prefix) :] for k in candidates if k.startswith(prefix)))
            )
        kind = schema[dotted]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{dotted}' is a section; expected a mapping of keys, got {value!r}")
            if dotted not in plugins.SECTIONS:
                _check_known_keys(value, dotted + ".")


def _plugin_sections(tree: dict, over_tree: dict) -> tuple[dict, dict, dict[str, Any]]:
    """Each plug-in section's dataclass for the plug-ins the config chooses (at its
    defaults), and both trees without the keys of plug-ins not chosen written at their
    defaults (ConfigError for any other key the chosen dataclass lacks)."""
    sections: dict[str, Any] = {}
    for name, sec in plugins.SECTIONS.items():
        chosen = plugins.chosen(sec, tree, over_tree)
        tree = plugins.screen(sec, chosen, tree)
        over_tree = plugins.screen(sec, chosen, over_tree)
        sections[name] = plugins.instance(sec, chosen)
    return tree, over_tree, sections


# ------------------------------------------------------------------------ loading


def _parse_overrides(overrides: Iterable[str]) -> list[str]:
    items = []
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.lr=0.05)")
        items.append(item)
    return items


def _parses(item: str) -> bool:
    try:
        OmegaConf.from_dotlist([item])
    except (OmegaConfBaseException, yaml.YAMLError):
        return False
    return True


def _user_tree(source: Any) -> dict:
    """Plain dict of what the user wrote, from a path, a mapping or a config."""
    if source is None:
        return {}
    if isinstance(source, ExperimentConfig):
        return OmegaConf.to_container(OmegaConf.structured(source), resolve=False)  # type: ignore[return-value]
    if isinstance(source, (DictConfig, ListConfig)):
        return OmegaConf.to_container(source, resolve=False)  # type: ignore[return-value]
    if isinstance(source, Mapping):
        return dict(source)
    return load_yaml_mapping(Path(source), "config file")


def load_config(source: Any = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load, merge and validate a config.

    ``source`` is a YAML path, a mapping, an ExperimentConfig or None (defaults);
    ``overrides`` are dotted ``key=value`` strings applied on top.
    """
    tree = _user_tree(source)
    _check_known_keys(tree)
    over_items = _parse_overrides(overrides)
    try:
        over = OmegaConf.from_dotlist(over_items)
    except (OmegaConfBaseException, yaml.YAMLError) as exc:
        bad = next((o for o in over_items if not _parses(o)), None)
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"override '{bad}' is not valid YAML after '=' ({first}); quote or fix it, e.g. train.epochs=[1,3]"
            if bad
            else f"cannot parse overrides {over_items}: {first}"
        ) from exc
    over_tree = OmegaConf.to_container(over, resolve=False)
    _check_known_keys(over_tree)
    tree, over_tree, sections = _plugin_sections(tree, over_tree)  # type: ignore[arg-type]
    base = OmegaConf.structured(ExperimentConfig(**sections))
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(tree), OmegaConf.create(over_tree))
        OmegaConf.resolve(merged)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe_omegaconf_error(exc)) from exc
    assert isinstance(cfg, ExperimentConfig)
    validate(cfg)
    return cfg


def _describe_omegaconf_error(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or "?"
    value = getattr(exc, "value", None)
    msg = str(exc).strip().splitlines()[0]
    if "could not be converted" in msg or "Value" in msg:
        expected = _schema_keys().get(key) or plugins.keys().get(key)
        name = getattr(expected, "__name__", None) or str(expected).replace("typing.", "")
        return f"config key '{key}': {value!r} is not a valid {name}"
    if "Interpolation" in type(exc).__name__ or "interpolation" in msg.lower():
        return f"config key '{key}': {msg}"
    return f"config key '{key}': {msg}"


def from_yaml_text(text: str) -> ExperimentConfig:
    """Inverse of :func:`to_yaml`."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config text is not valid YAML: {exc}") from exc
    return load_config(tree or {})


def merge_into_saved(cfg: ExperimentConfig, path: Path) -> str:
    """``config.yaml`` of a resumed run: the saved file with the values this start
    changes (more rounds, another engine), without the keys it never had that are at
    their defaults (added to fedsim since: their defaults keep the run's behaviour, and
    :func:`config_hash` over the file's keys stays the run's)."""
    saved = load_yaml_mapping(path, "config")
    have = flatten(saved)
    defaults = flatten(to_dict(ExperimentConfig()))
    for key, value in flatten(to_dict(cfg)).items():
        if key not in have and value == defaults.get(key):
            continue
        node = saved
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return yaml.safe_dump(saved, sort_keys=False)
