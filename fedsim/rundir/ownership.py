"""A directory fedsim owns: its contract, the marker that proves it, and its lock.

A run, sweep or partition directory holds a marker file, ``.fedsim``, written by
fedsim when it first writes there. fedsim deletes only what it wrote:
``--overwrite`` removes the entries of the directory's contract (the files and
folders listed below) and refuses a directory that holds anything else, naming the
first foreign entry; ``--resume`` refuses a directory without the marker.

One process owns a directory at a time: :class:`DirLock` takes an advisory
``flock`` on ``.fedsim.lock``; the kernel releases it when the process ends, however
it ends, so a ``kill -9`` never leaves a stale lock. A second process gets an error
naming the holder's pid.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from fedsim.errors import RunDirError
from fedsim.version import __version__

MARKER = ".fedsim"
LOCK = ".fedsim.lock"

#: what fedsim writes, by kind of directory (names; a trailing "/" is a folder)
CONTRACT: dict[str, tuple[str, ...]] = {
    "run": (
        "config.yaml",
        "dataidxs.npz",
        "partition.json",
        "metrics.jsonl",
        "clients.jsonl",
        "parties.jsonl",
        "summary.json",
        "model.pt",
        "report.md",
        "checkpoints/",
        "client_state/",
        "plots/",
        "tensorboard/",
        # experiment trackers (fedsim/trackers/): ids and failures, MLflow's default
        # store and artifacts, W&B's files
        "trackers.json",
        "mlflow.db",
        "mlartifacts/",
        "wandb/",
    ),
    "partition": ("dataidxs.npz", "partition.json", "label_distribution.png"),
    "sweep": (
        "sweep.json",
        "summary.csv",
        "table.md",
        "selection.md",
        "selection.csv",
        "report.md",
        "figures/",
        "cv/",
        "trackers.json",
        "mlflow.db",
        "mlartifacts/",
    ),
    # fedsim tune (fedsim/tuning/): the study, its trials' run directories, the final sweep
    "tune": (
        "tune.json",
        "study.db",
        "tune.md",
        "trials.csv",
        "figures/",
        "trials/",
        "final/",
        "trackers.json",
        "mlflow.db",
        "mlartifacts/",
    ),
}


def _mine(name: str, kind: str) -> bool:
    """Whether an entry name belongs to fedsim in a directory of ``kind``."""
    if name in (MARKER, LOCK):
        return True
    if name.startswith(".") and name.endswith(".tmp"):  # an atomic write cut short
        return True
    entries = CONTRACT[kind]
    return name in entries or f"{name}/" in entries


def read_marker(root: Path) -> dict | None:
    """The marker's content, or None when ``root`` holds no (readable) marker."""
    path = Path(root) / MARKER
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("fedsim") else None


def write_marker(root: Path, kind: str) -> None:
    path = Path(root) / MARKER
    if not path.exists():
        path.write_text(
            json.dumps({"fedsim": __version__, "kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n"
        )


def foreign_entries(root: Path, kind: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Entries of ``root`` fedsim did not write (sorted); ``extra`` names are fedsim's too."""
    out = []
    for child in sorted(Path(root).iterdir(), key=lambda p: p.name):
        if not (_mine(child.name, kind) or child.name in extra):
            out.append(child.name + ("/" if child.is_dir() else ""))
    return out


def remove_own(root: Path, kind: str, extra: tuple[str, ...] = ()) -> None:
    """Delete what fedsim wrote in ``root`` (never the marker's directory itself)."""
    for child in Path(root).iterdir():
        if child.name == LOCK or not (_mine(child.name, kind) or child.name in extra):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def claim(
    root: Path, kind: str, *, resume: bool, overwrite: bool, extra: tuple[str, ...] = (), check_only: bool = False
) -> None:
    """Make ``root`` ready for fedsim to write, or refuse with one line.

    A new or empty directory is created and marked. An existing one must carry the
    marker of the same kind: ``resume`` continues it, ``overwrite`` empties it of what
    fedsim wrote (refusing if anything else is there), and neither is an error.
    ``check_only`` raises what it would raise and writes nothing (callers check before
    taking the lock, so a refused directory is left untouched, then claim under it).
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RunDirError(f"--out '{root}' is a file; give a directory path")
    entries = [c for c in root.iterdir() if c.name != LOCK] if root.is_dir() else []
    if entries:
        marker = read_marker(root)
        what = {"run": "run", "sweep": "sweep", "partition": "partition", "tune": "tune"}[kind]
        if marker is None:
            first = foreign_entries(root, kind)
            hint = f" (it holds '{first[0]}')" if first else ""
            if resume:
                raise RunDirError(
                    f"--resume: '{root}' is not a fedsim {what} directory (no {MARKER} marker){hint}; refusing to touch it"
                )
            raise RunDirError(
                f"--out '{root}' exists and is not a fedsim {what} directory{hint}; choose an empty or new directory"
            )
        if marker.get("kind", kind) != kind:
            raise RunDirError(f"'{root}' is a fedsim {marker.get('kind')} directory, not a {what} directory")
        if overwrite:
            foreign = foreign_entries(root, kind, extra)
            if foreign:
                raise RunDirError(
                    f"--overwrite: '{root}' holds '{foreign[0]}', which fedsim did not write; refusing to delete anything"
                )
            if not check_only:
                remove_own(root, kind, extra)
        elif not resume:
            raise RunDirError(
                f"--out '{root}' exists and is not empty; use --resume to continue it or --overwrite to replace it"
            )
    if check_only:
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_marker(root, kind)
    except OSError as exc:
        raise RunDirError(f"cannot write to '{root}': {exc.strerror or exc}") from exc


class DirLock:
    """An exclusive advisory lock on a directory for the life of this process's work."""

    def __init__(self, root: Path, what: str = "run") -> None:
        self.root = Path(root)
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> DirLock:
        path = self.root / LOCK
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunDirError(f"cannot write to '{self.root}': {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(
                    f"'{self.root}' is in use by process {holder} (another fedsim {self.what}); wait for it or stop it"
                ) from None
            raise RunDirError(f"cannot lock '{self.root}': {exc.strerror or exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
