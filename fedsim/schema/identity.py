"""What makes a run that run: its resolved config as YAML and as a dict, its identity
(the dotted keys that change its results), the hash of that identity (how checkpoints
and sweeps recognise a run after a resume or an upgrade) and the difference between two
configs."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from fedsim.schema.experiment import ExperimentConfig
from fedsim.util.trees import flatten
from fedsim.util.yaml_file import load_yaml_mapping


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (what ``config.yaml`` in a run directory holds)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: ExperimentConfig) -> dict:
    # the dataclasses hold plain, already-validated values (load_config resolved them
    # through OmegaConf), so asdict gives what OmegaConf.to_container did, 100x faster:
    # a run hashes its config three times (0.15 s of a tiny test run's 0.9 s)
    return dataclasses.asdict(cfg)


#: keys that do not make a run another run (left out of its identity): where it runs
#: (the engines give the same results), what it keeps (output.*), its failure
#: tolerances (raised to resume an aborted run) and how many rounds it has (raised to
#: train a finished run on), or how many bytes (``comm.budget_mb``, raised likewise)
NOT_IDENTITY = (
    "output",
    "engine.name",
    "engine.device",
    "engine.workers",
    "engine.num_cpus",
    "engine.num_gpus",
    "engine.ray_address",
    "engine.threads",
    "engine.batch_clients",
    "engine.client_timeout",
    "federation.max_failure_fraction",
    "federation.rounds",
    "comm.budget_mb",
)


#: keys at these values are left out of a run's identity: a run without an attack, a
#: defence, a compressor, top-k's momentum correction or warm-up or a compressed broadcast keeps the hash it had before those sections existed (its
#: sweep still resumes)
NOT_IDENTITY_AT = {
    "attack.name": "none",
    "defence.name": "none",
    "eval.target_accuracy": None,
    "comm.compressor": "none",
    "comm.momentum_correction": 0.0,
    "comm.downlink": False,
    "comm.warmup_rounds": 0,
}
#: sections left out of a run's identity when their chooser has this value: a run without
#: a simulated clock (``system.source: none``, whose other keys must then be at their
#: defaults) or with uniform selection (``selection.name: uniform``, fedsim's draw before
#: selectors were plug-ins) keeps the hash it had before the section existed; so does a
#: synchronous run (``asynchronous.mode: off``)
NOT_IDENTITY_OFF = {"system": ("source", "none"), "selection": ("name", "uniform"), "asynchronous": ("mode", "off")}


def identity(cfg: ExperimentConfig) -> dict[str, Any]:
    """The dotted keys and values that make a run what it is (see NOT_IDENTITY)."""
    flat = flatten(to_dict(cfg))
    off = [s for s, (key, value) in NOT_IDENTITY_OFF.items() if flat.get(f"{s}.{key}") == value]
    return {
        k: v
        for k, v in flat.items()
        if not any(k == n or k.startswith(n + ".") for n in (*NOT_IDENTITY, *off))
        and not (k in NOT_IDENTITY_AT and v == NOT_IDENTITY_AT[k])
    }


def config_hash(cfg: ExperimentConfig, keys: Collection[str] | None = None) -> str:
    """A stable hash of everything that changes the results of a run (:func:`identity`):
    a sweep resumed on another machine, with more workers, a higher failure tolerance
    or more rounds still recognises its runs. ``keys``: only those dotted keys (a run's
    own, :func:`yaml_keys` of its ``config.yaml``): a run started by an older fedsim
    lacks the keys added since, whose defaults keep its behaviour, and its checkpoints
    must still match after an upgrade."""
    ident = identity(cfg)
    if keys is not None:
        ident = {k: v for k, v in ident.items() if k in keys}
    text = yaml.safe_dump(ident, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def yaml_keys(path: Path) -> set[str]:
    """The dotted keys a config file spells out (a run's ``config.yaml``)."""
    return set(flatten(load_yaml_mapping(path, "config")))


def config_diff(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """``key: old -> new`` for every identity key that differs (sorted)."""
    a, b = identity(old), identity(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
