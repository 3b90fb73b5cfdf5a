"""Decoded datasets cached beside their files, so that decoding happens once.

Reading a LEAF JSON file, a folder of PNGs or a Hugging Face dataset's encoded images
costs seconds to minutes; the tensors they decode to are plain arrays. The first load
writes them as ``.npy`` files (no pickle) under ``<beside>/.fedsim-cache/<name>-<key>/``;
later loads map them into memory (``np.load(mmap_mode="c")``: copy-on-write, so the
arrays are writable yet the files never change). Mapping costs nothing up front; pages
are read on first touch and shared through the page cache by every process that maps
the same entry (the engine's worker processes hold one copy of a dataset, not one each).

``key`` is a sha256 over the loader's name, the config values that change the decoded
arrays, and each source file's path, size and modification time: editing, adding or
removing a source file, or changing e.g. ``data.image_size``, decodes again into a new
entry (old entries stay until deleted; the whole ``.fedsim-cache`` folder can be
removed at any time). An entry is written into a temporary folder and renamed into
place, so a killed process never leaves a half-written entry that is later read. A
folder that cannot be written is not an error: the data are decoded on every load and
a warning says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CACHE_DIR = ".fedsim-cache"
FORMAT = 1


def fingerprint(files: Iterable[Path], base: Path | None = None) -> list[tuple[str, int, int]]:
    """(path, size, mtime in ns) of each file, sorted: what the key knows of the sources."""
    out = []
    for f in files:
        st = os.stat(f)
        name = os.path.relpath(f, base) if base is not None else str(f)
        out.append((name, int(st.st_size), int(st.st_mtime_ns)))
    return sorted(out)


def cache_key(name: str, params: Mapping[str, Any], sources: Any) -> str:
    """sha256 of the loader name, its decoding parameters and the source fingerprint."""
    text = json.dumps(
        {"format": FORMAT, "name": name, "params": params, "sources": sources}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached(
    beside: Path, name: str, key: str, build: Callable[[], tuple[dict[str, np.ndarray], dict]]
) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` from the cache entry ``name-key`` under ``beside``, or built and stored.

    ``build()`` returns the arrays (numeric numpy arrays, no objects) and a JSON-able
    ``meta`` dict (class count, normalisation statistics, ...).
    """
    entry = Path(beside) / CACHE_DIR / f"{name}-{key}"
    hit = _read(entry)
    if hit is not None:
        log.info("dataset %s: read decoded arrays from %s", name, entry)
        return hit
    arrays, meta = build()
    _write(entry, arrays, meta)
    return arrays, meta


def _read(entry: Path) -> tuple[dict[str, np.ndarray], dict] | None:
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        doc = json.loads(meta_path.read_text())
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="c", allow_pickle=False) for name in doc["arrays"]}
        return arrays, doc["meta"]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        # a damaged entry is not the user's data: decode again (and replace it)
        log.warning("ignoring unreadable cache entry %s (%s: %s)", entry, type(exc).__name__, exc)
        return None


def _write(entry: Path, arrays: Mapping[str, np.ndarray], meta: dict) -> None:
    parent = entry.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-" + entry.name + "-", dir=parent))
    except OSError as exc:
        log.warning("cannot cache decoded data in %s (%s); it will be decoded again on the next load", parent, exc)
        return
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps({"arrays": sorted(arrays), "meta": meta}, indent=1))
        if entry.exists():
            if _read(entry) is not None:  # another process wrote it meanwhile: keep theirs
                return
            shutil.rmtree(entry, ignore_errors=True)  # a damaged entry
        os.replace(tmp, entry)
        log.info("cached decoded arrays in %s", entry)
    except OSError as exc:
        log.warning("cannot cache decoded data in %s (%s); it will be decoded again on the next load", parent, exc)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
