"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint of round r is a directory ``checkpoints/round_{r:06d}/`` with

* ``state.pt``: the global weights, the strategy's server state (SCAFFOLD's c,
  FedAdam's moments, FedAvgM's momentum, ...), the random generators' states, the
  round, the history of metrics rows and the wall time so far;
* ``client_state/``: hard links to the client-state store's files of that moment;
* ``manifest.json``: the sha256 of ``state.pt`` and the client-state file names,
  written last.

It is built in a temporary directory and renamed into place, so a crash leaves
either the whole checkpoint or none; the newest ``keep`` checkpoints are kept. What
the next round changes is taken first (:func:`stage_checkpoint`), the rest may be
written on another thread (:func:`write_staged`, :class:`BackgroundWriter`). On
resume the newest checkpoint that verifies is used (``state.pt`` against its sha256,
each client-state file against its own CRC32); a damaged one is skipped with a
warning, and only when none verifies is it an error.
Every random draw of fedsim is derived from (seed, purpose, round, party), so a
resumed run needs no generator state to repeat the same draws; the global
generators are saved and restored anyway, for user code that draws from them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim.errors import RunDirError
from fedsim.rundir.store import (
    DIR_MODE,
    ClientStateStore,
    RunStore,
    atomic_torch_save,
    atomic_write_json,
    dumps,
    load_tensors,
    safe_torch_load,
)

log = logging.getLogger(__name__)

VERSION = 1
MANIFEST = "manifest.json"


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
    dirs = [
        d
        for d in store.checkpoints.iterdir()
        if d.is_dir() and d.name.startswith("round_") and d.name[6:].isdigit() and (d / "state.pt").exists()
    ]
    return sorted(dirs, key=lambda d: int(d.name.split("_")[1]))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class StagedCheckpoint:
    """A checkpoint whose content is fixed but not yet on disk (:func:`stage_checkpoint`):
    ``payload`` is what ``state.pt`` will hold; ``tmp`` the directory that already holds
    its client-state links, or None when there was no client state (an empty
    ``client_state/`` is made with the rest); :func:`write_staged` finishes it."""

    store: RunStore
    round: int
    payload: dict[str, Any]
    tmp: Path | None
    keep: int


def _staging_dir(store: RunStore, round_: int, client_state: bool) -> Path:
    """A new ``.round_*`` directory for the checkpoint of ``round_``, with its
    ``client_state/``: links to the store's files, or empty (``client_state`` False)."""
    store.checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".round_{round_:06d}.", dir=store.checkpoints))
    os.chmod(tmp, DIR_MODE)  # mkdtemp makes it owner-only; results follow the umask
    try:
        if client_state:
            ClientStateStore(store.client_state).snapshot(tmp / "client_state")
        else:
            (tmp / "client_state").mkdir()
        os.chmod(tmp / "client_state", DIR_MODE)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def stage_checkpoint(
    store: RunStore,
    round_: int,
    arrays: Mapping[str, torch.Tensor],
    strategy_state: Mapping[str, Any],
    history: list[dict],
    wall_time_s: float,
    config_hash: str,
    keep: int = 2,
) -> StagedCheckpoint:
    """Everything of the checkpoint that the next round would change, taken now: the
    arrays cloned, the history as JSON, the random generators' states and hard links to
    the client-state files (a commit replaces them, it never writes into them).
    ``strategy_state`` must be a copy the run does not touch again (``state_dict()``'s
    entries are fresh clones). Serialising and writing is left to :func:`write_staged`."""
    payload = {
        "version": VERSION,
        "round": int(round_),
        "arrays": {k: v.detach().cpu().clone() for k, v in arrays.items()},
        "strategy": dict(strategy_state),
        "history": dumps(history),
        "wall_time_s": float(wall_time_s),
        "config_hash": config_hash,
        "rng": _rng_states(),
    }
    # without client state (FedAvg) nothing on disk needs taking now: the directories are
    # made by the writer (benchmarks/peers.py 1000x10: two mkdirs, 0.3 ms of the round loop's)
    linked = any(store.client_state.glob("party_*.pt"))
    tmp = _staging_dir(store, round_, client_state=True) if linked else None
    return StagedCheckpoint(store, int(round_), payload, tmp, keep)


def write_staged(staged: StagedCheckpoint) -> Path:
    """``state.pt`` and the manifest (last) into the staging directory, which is then
    renamed into place: a crash before the rename leaves the previous checkpoints as
    they were (the ``.round_*`` leftover is removed by the next checkpoint). Then all
    but the newest ``keep`` checkpoints are removed. Touches nothing the run changes,
    so it may run on another thread (:class:`BackgroundWriter`)."""
    store = staged.store
    tmp = staged.tmp if staged.tmp is not None else _staging_dir(store, staged.round, client_state=False)
    final = store.checkpoints / f"round_{staged.round:06d}"
    try:
        # hashed as written, not read back (250 kB of simple-cnn: 0.15 ms of reading and hashing -> 0.13 of hashing)
        digest = hashlib.sha256()
        atomic_torch_save(tmp / "state.pt", staged.payload, digest)
        atomic_write_json(
            tmp / MANIFEST,
            {
                "round": staged.round,
                "state_sha256": digest.hexdigest(),
                "client_state": sorted(f.name for f in (tmp / "client_state").glob("party_*.pt")),
            },
        )
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_dirs(store)[: -staged.keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in store.checkpoints.glob(".round_*"):  # leftovers of a crash mid-checkpoint
        shutil.rmtree(stale, ignore_errors=True)
    return final


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
    """The checkpoint of ``round_``, written before it returns (:func:`stage_checkpoint`
    then :func:`write_staged`)."""
    return write_staged(
        stage_checkpoint(store, round_, arrays, strategy_state, history, wall_time_s, config_hash, keep)
    )


class BackgroundWriter:
    """One write at a time on a thread of its own, its error kept for the caller.

    :meth:`wait` waits for the write in flight and raises what it raised (the same
    exception object: an ENOSPC names its file as a synchronous write's would); the
    caller waits before the next write and before the run ends or stops, so a run never
    goes on past a failed write by more than the round it overlapped. The executor's
    thread is started once (a thread a write cost 0.1 ms of starting) and is joined at
    the interpreter's exit: an uncaught Ctrl-C still finishes the write in flight."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def submit(self, write: Callable[[], object]) -> None:
        """Wait for the previous write (raising its error), then start ``write``."""
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedsim-checkpoint-writer")
        self._pending = self._pool.submit(write)

    def wait(self) -> None:
        """Return once no write is in flight; raise the last write's error, once."""
        pending = self._pending
        if pending is not None:
            pending.exception()  # an interrupt here leaves it pending: the next wait waits again
            self._pending = None
            pending.result()

    def close(self) -> None:
        """:meth:`wait`, then stop the thread (a later write starts a new one)."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


def verify_checkpoint(path: Path) -> None:
    """RunDirError unless the checkpoint's files match its manifest."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise RunDirError(f"checkpoint '{path}' has no {MANIFEST} (it was cut short or is not fedsim's)") from None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"checkpoint '{path}' has an unreadable {MANIFEST} ({type(exc).__name__})") from None
    if _sha256(path / "state.pt") != manifest.get("state_sha256"):
        raise RunDirError(f"checkpoint '{path}' is corrupt: state.pt does not match its sha256")
    names = (
        sorted(f.name for f in (path / "client_state").glob("party_*.pt")) if (path / "client_state").is_dir() else []
    )
    if names != manifest.get("client_state", []):
        raise RunDirError(
            f"checkpoint '{path}' is incomplete: its client_state/ does not hold the files of its manifest"
        )
    for name in names:
        load_tensors(path / "client_state" / name)


def load_checkpoint(path: Path) -> Checkpoint:
    verify_checkpoint(path)
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


def latest_checkpoint(store: RunStore, warn: bool = True) -> Checkpoint | None:
    """The newest checkpoint that verifies (older ones are the fallback); None when
    there is none; RunDirError when there are some and none verifies. ``warn``: say
    which damaged checkpoints were skipped (the checks before a resume read the
    checkpoint too, quietly: the resume itself says it once)."""
    dirs = checkpoint_dirs(store)
    problems = []
    for path in reversed(dirs):
        try:
            ckpt = load_checkpoint(path)
        except RunDirError as exc:
            problems.append(str(exc))
            continue
        # said only when a fallback is found: with none intact, the error is the one line
        for problem in problems if warn else ():
            log.warning("%s; falling back to an older checkpoint", problem)
        if problems and warn:
            log.warning("resuming from the older checkpoint '%s'", path)
        return ckpt
    if problems:
        raise RunDirError(
            f"no checkpoint of '{store.root}' is intact ({problems[0]}{'; ...' if len(problems) > 1 else ''}); the run cannot resume"
        )
    return None
