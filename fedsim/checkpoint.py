"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint of round r is a directory ``checkpoints/round_{r:06d}/`` with

* ``state.pt``: the global weights, the strategy's server state (SCAFFOLD's c,
  FedAdam's moments, FedAvgM's momentum, ...), the random generators' states, the
  round, the history of metrics rows and the wall time so far;
* ``client_state/``: hard links to the client-state store's files of that moment.

It is built in a temporary directory and renamed into place, so a crash leaves
either the whole checkpoint or none; the newest ``keep`` checkpoints are kept.
Every random draw of fedsim is derived from (seed, purpose, round, party), so a
resumed run needs no generator state to repeat the same draws; the global
generators are saved and restored anyway, for user code that draws from them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .errors import RunDirError
from .store import ClientStateStore, RunStore, atomic_torch_save, dumps, safe_torch_load

VERSION = 1


@dataclass
class Checkpoint:
    round: int
    arrays: dict[str, torch.Tensor]
    strategy: dict[str, Any]
    history: list[dict]
    wall_time_s: float
    config_hash: str
    path: Path


def _rng_states() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": json.dumps(random.getstate()),
        "numpy_key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
        "numpy_pos": int(np_state["state"]["pos"]),
    }


def _restore_rng(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available() and states.get("cuda"):
        torch.cuda.set_rng_state_all(states["cuda"])
    py = json.loads(states["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(("MT19937", states["numpy_key"].numpy().astype(np.uint32), states["numpy_pos"], 0, 0.0))


def checkpoint_dirs(store: RunStore) -> list[Path]:
    if not store.checkpoints.exists():
        return []
    dirs = [d for d in store.checkpoints.iterdir() if d.is_dir() and d.name.startswith("round_") and (d / "state.pt").exists()]
    return sorted(dirs, key=lambda d: int(d.name.split("_")[1]))


def save_checkpoint(
    store: RunStore,
    round_: int,
    arrays: Mapping[str, torch.Tensor],
    strategy_state: Mapping[str, Any],
    history: list[dict],
    wall_time_s: float,
    config_hash: str,
    keep: int = 2,
) -> Path:
    store.checkpoints.mkdir(parents=True, exist_ok=True)
    final = store.checkpoints / f"round_{round_:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".round_{round_:06d}.", dir=store.checkpoints))
    try:
        atomic_torch_save(
            tmp / "state.pt",
            {
                "version": VERSION,
                "round": int(round_),
                "arrays": {k: v.detach().cpu().clone() for k, v in arrays.items()},
                "strategy": dict(strategy_state),
                "history": dumps(history),
                "wall_time_s": float(wall_time_s),
                "config_hash": config_hash,
                "rng": _rng_states(),
            },
        )
        ClientStateStore(store.client_state).snapshot(tmp / "client_state")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(store)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in store.checkpoints.glob(".round_*"):  # leftovers of a crash mid-checkpoint
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> Checkpoint:
    data = safe_torch_load(path / "state.pt")
    if not isinstance(data, dict) or data.get("version") != VERSION or "arrays" not in data:
        raise RunDirError(f"checkpoint '{path / 'state.pt'}' is not a fedsim checkpoint (version {VERSION})")
    try:
        history = json.loads(data["history"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"checkpoint '{path / 'state.pt'}' has a corrupt history") from exc
    if "rng" in data:
        _restore_rng(data["rng"])
    return Checkpoint(
        round=int(data["round"]),
        arrays=dict(data["arrays"]),
        strategy=dict(data["strategy"]),
        history=history,
        wall_time_s=float(data.get("wall_time_s", 0.0)),
        config_hash=str(data.get("config_hash", "")),
        path=path,
    )


def latest_checkpoint(store: RunStore) -> Checkpoint | None:
    dirs = checkpoint_dirs(store)
    return load_checkpoint(dirs[-1]) if dirs else None
