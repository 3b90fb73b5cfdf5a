"""Persistence of a partition (``dataidxs.npz``), tied to the labels it was made for.

Format (``np.savez``, no pickled objects; version 1):
``indices`` int64, every party's indices concatenated in party order; ``offsets`` int64,
n_parties + 1 bounds (party j is ``indices[offsets[j]:offsets[j+1]]``) — two arrays
whatever the number of parties; ``scheme``, ``params_json`` (the scheme parameters as
JSON; an array-valued one such as ``groups`` is replaced by its shape, dtype and
sha256), ``seed``, ``n_samples``, ``labels_sha256`` (sha256 of the labels as
little-endian int64 bytes), ``version``; optionally each party's own test data
(``local_test_indices``/``local_test_offsets`` as above, and ``local_test_source``:
``train`` when they index the training set, ``test`` when they index the test set),
which never overlaps the party's training indices.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ._validate import check_labels

FORMAT_VERSION = 1
_KEYS = ("indices", "offsets", "scheme", "params_json", "seed", "n_samples", "labels_sha256", "version")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class PartitionFileError(ValueError):
    """A partition file is missing, unreadable, or made for other labels."""


def labels_sha256(labels: Any) -> str:
    """sha256 hex digest of ``labels`` as little-endian int64 bytes."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


def _jsonable(value: Any) -> Any:
    """``value`` as JSON; arrays and long sequences (e.g. ``groups``) become a summary."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, list, tuple)):
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):  # ragged: stored as JSON below if it can be, else as a note
            arr = None
        if arr is not None and arr.dtype.kind in "biufU" and arr.ndim <= 1 and arr.size <= 64:
            return arr.tolist()
        if arr is not None and arr.dtype.kind in "biufUS":
            return {
                "note": "array not stored",
                "shape": list(arr.shape),
                "dtype": str(arr.dtype),
                "sha256": hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(),
            }
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return {"note": "value not stored", "repr": repr(value)[:200]}
    return value


class FlatPartition(Mapping):
    """Parties 0..n-1's index arrays as one concatenated int64 array and n + 1 offsets
    (the layout of ``dataidxs.npz``), read as a ``{party: indices}`` mapping whose
    arrays are views made on access.

    A million parties are two arrays instead of a million array objects: as a dict,
    the iid split of 10M samples into 1M parties took 8.3 s and ~200 MB more, and every
    pass over it (the file, the statistics) another second or more
    (``benchmarks/scale.py``).
    """

    __slots__ = ("indices", "offsets")

    def __init__(self, indices: np.ndarray, offsets: np.ndarray) -> None:
        self.indices = indices
        self.offsets = offsets

    def __getitem__(self, party: Any) -> np.ndarray:
        try:
            j = operator.index(party)
        except TypeError:
            raise KeyError(party) from None
        if not 0 <= j < self.offsets.size - 1:
            raise KeyError(party)
        return self.indices[self.offsets[j] : self.offsets[j + 1]]

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self)))

    def __contains__(self, party: object) -> bool:
        try:
            return 0 <= operator.index(party) < len(self)  # type: ignore[arg-type]
        except TypeError:
            return False

    def __repr__(self) -> str:
        return f"FlatPartition({len(self)} parties, {self.indices.size} indices)"

    @classmethod
    def from_sizes(cls, indices: np.ndarray, sizes: np.ndarray) -> FlatPartition:
        """Party j holds the next ``sizes[j]`` entries of ``indices``."""
        offsets = np.zeros(sizes.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        return cls(indices, offsets)


def party_sizes(dataidxs: Mapping[int, Any]) -> np.ndarray:
    """The number of samples of parties ``sorted(dataidxs)``, as an int64 array."""
    if isinstance(dataidxs, FlatPartition):
        return np.diff(dataidxs.offsets)
    return np.array([np.asarray(dataidxs[p]).size for p in sorted(dataidxs)], dtype=np.int64)


def _flat(parts: Mapping[int, Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Parties 0..n-1's index arrays as (concatenated indices, offsets)."""
    if isinstance(parts, FlatPartition) and len(parts) == n:
        return parts.indices.astype(np.int64, copy=False), parts.offsets.astype(np.int64, copy=False)
    arrays = [np.asarray(parts.get(j, ()), dtype=np.int64).reshape(-1) for j in range(n)]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([a.size for a in arrays], out=offsets[1:])
    return (np.concatenate(arrays) if arrays else np.empty(0, np.int64)), offsets


def save_dataidxs(
    path: str | os.PathLike,
    dataidxs: Mapping[int, Any],
    labels: Any,
    scheme: str,
    params: Mapping[str, Any],
    seed: int,
    local_test: Mapping[int, Any] | None = None,
    local_test_source: str = "",
) -> None:
    """Write ``dataidxs`` (keys 0..n-1) to ``path`` atomically (temp file + os.replace),
    with each party's own test indices when given (``local_test_source``: ``train`` or
    ``test``, the set they index)."""
    labels = check_labels(labels)
    n = len(dataidxs)
    if not isinstance(dataidxs, FlatPartition) and sorted(dataidxs) != list(range(n)):
        raise ValueError(f"dataidxs keys must be the party ids 0..{n - 1}")
    indices, offsets = _flat(dataidxs, n)
    if indices.size and (indices.min() < 0 or indices.max() >= labels.size):
        raise ValueError(f"dataidxs hold an index outside 0..{labels.size - 1}")
    payload = {
        "indices": indices,
        "offsets": offsets,
        "scheme": np.array(str(scheme)),
        "params_json": np.array(json.dumps({str(k): _jsonable(v) for k, v in params.items()}, sort_keys=True)),
        "seed": np.array(int(seed), dtype=np.int64),
        "n_samples": np.array(labels.size, dtype=np.int64),
        "labels_sha256": np.array(labels_sha256(labels)),
        "version": np.array(FORMAT_VERSION, dtype=np.int64),
    }
    if local_test is not None:
        if local_test_source not in ("train", "test"):
            raise ValueError(f"local_test_source must be 'train' or 'test', got {local_test_source!r}")
        if local_test_source == "train":
            for j in range(n):
                if np.intersect1d(np.asarray(local_test.get(j, ()), dtype=np.int64), np.asarray(dataidxs[j])).size:
                    raise ValueError(f"party {j}'s local test indices overlap its training indices")
        payload["local_test_indices"], payload["local_test_offsets"] = _flat(local_test, n)
        payload["local_test_source"] = np.array(local_test_source)
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes it owner-only
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read(path: str | os.PathLike) -> dict[str, np.ndarray]:
    name = os.fspath(path)
    try:
        with np.load(name, allow_pickle=False) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise PartitionFileError(f"{name} is not a partition file (missing {', '.join(missing)})")
            data = {k: z[k] for k in _KEYS}
    except PartitionFileError:
        raise
    except FileNotFoundError:
        raise PartitionFileError(f"{name} does not exist") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise PartitionFileError(f"{name} is not a readable partition file ({type(e).__name__}: {e})") from None
    if int(data["version"]) != FORMAT_VERSION:
        raise PartitionFileError(
            f"{name} has format version {int(data['version'])}; this fedsim reads {FORMAT_VERSION}"
        )
    return data


def load_local_test(path: str | os.PathLike) -> tuple[FlatPartition, str] | None:
    """Each party's own test indices and the set they index (``train``/``test``), or
    None when the file holds none."""
    name = os.fspath(path)
    try:
        with np.load(name, allow_pickle=False) as z:
            if "local_test_indices" not in z.files:
                return None
            idx, off, source = z["local_test_indices"], z["local_test_offsets"], str(z["local_test_source"])
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise PartitionFileError(f"{name} is not a readable partition file ({type(e).__name__}: {e})") from None
    return FlatPartition(idx.astype(np.int64, copy=False), off.astype(np.int64, copy=False)), source


def read_dataidxs_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a partition file: ``scheme, params, seed, n_samples,
    labels_sha256, version, n_parties``."""
    d = _read(path)
    try:
        params = json.loads(str(d["params_json"]))
    except ValueError as e:
        raise PartitionFileError(f"{os.fspath(path)} has unreadable params_json ({e})") from None
    return {
        "scheme": str(d["scheme"]),
        "params": params,
        "seed": int(d["seed"]),
        "n_samples": int(d["n_samples"]),
        "labels_sha256": str(d["labels_sha256"]),
        "version": int(d["version"]),
        "n_parties": int(d["offsets"].size - 1),
    }


def load_dataidxs(path: str | os.PathLike, labels: Any) -> FlatPartition:
    """Read a partition file made by :func:`save_dataidxs` for these ``labels``.

    PartitionFileError if the file is missing or corrupt, or was made for a dataset of
    another size or with other labels (checked by sha256).
    """
    name = os.fspath(path)
    base = os.path.basename(name)
    labels = check_labels(labels)
    d = _read(path)
    n_file, sha_file = int(d["n_samples"]), str(d["labels_sha256"])
    sha_now = labels_sha256(labels)
    if n_file != labels.size or sha_file != sha_now:
        what = f"has {labels.size} samples" if n_file != labels.size else "has different labels"
        raise PartitionFileError(
            f"{base} was made for a dataset of {n_file} samples with labels checksum {sha_file[:12]}..., "
            f"but the current dataset {what} (checksum {sha_now[:12]}...): delete {name} or use the matching dataset"
        )
    indices, offsets = d["indices"], d["offsets"]
    if (
        indices.dtype.kind not in "iu"
        or offsets.dtype.kind not in "iu"
        or indices.ndim != 1
        or offsets.ndim != 1
        or offsets.size < 1
        or offsets[0] != 0
        or offsets[-1] != indices.size
        or (np.diff(offsets) < 0).any()
        or (indices.size and (indices.min() < 0 or indices.max() >= labels.size))
    ):
        raise PartitionFileError(f"{name} is corrupt (inconsistent indices/offsets)")
    return FlatPartition(indices.astype(np.int64, copy=False), offsets.astype(np.int64, copy=False))
