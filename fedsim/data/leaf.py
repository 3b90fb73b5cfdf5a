"""LEAF's FEMNIST and Shakespeare (Caldas et al., "LEAF: A Benchmark for Federated
Settings", 2018) from the JSON files LEAF's preprocessing scripts write.

``data.root`` holds ``train/*.json`` and ``test/*.json`` (LEAF writes them to
``data/<task>/data/{train,test}/``). Each file is::

    {"users": ["f0000_14", ...], "num_samples": [n, ...],
     "user_data": {"f0000_14": {"x": [...], "y": [...]}, ...}}

=================  ============================================================================
leaf-femnist       x: 784 floats in [0, 1] per sample (a 28x28 character, 1.0 = white
                   background, LEAF's ``vec / 255``), stored here as uint8 ``round(255 x)``;
                   y: class 0..61 (10 digits, 26 upper-case, 26 lower-case letters)
leaf-shakespeare   x: an 80-character string per sample; y: the next character. Both are
                   encoded in LEAF's 80-symbol alphabet (:mod:`fedsim.data.text`): int64
                   ``(N, 80)`` tokens and a label in 0..79
=================  ============================================================================

Every user is a natural group: ``groups`` gives each training sample its user, and
``groups_test`` each test sample (the same ids: the users sorted by name over both
splits), so ``partition.scheme: natural`` deals whole users to parties and each party's
own users' test samples can be found. Decoded once and cached beside the files
(:mod:`fedsim.data.cache`): parsing FEMNIST's JSON takes minutes, reading the cache
seconds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data import text
from fedsim.data.cache import cache_key, cached, fingerprint
from fedsim.data.images import channel_stats, is_regular_file
from fedsim.data.registry import DatasetBundle, register
from fedsim.errors import DataError
from fedsim.schema.sections import DataConfig

log = logging.getLogger(__name__)

FEMNIST_CLASSES = 62
FEMNIST_SIDE = 28


def _root(cfg: DataConfig) -> Path:
    return Path(str(cfg.root)).expanduser().resolve()


def _files(root: Path, split: str, name: str) -> list[Path]:
    where = root / split
    files = sorted(where.glob("*.json")) if where.is_dir() else []
    odd = [f for f in files if not is_regular_file(f)]
    if odd:  # a FIFO would block the load forever
        log.warning(
            "dataset '%s': skipped %s in %s: not a regular file (a FIFO, socket, device or broken link)",
            name,
            ", ".join(f.name for f in odd[:3]) + (", ..." if len(odd) > 3 else ""),
            where,
        )
        files = [f for f in files if f not in odd]
    if not files:
        raise DataError(
            f"dataset '{name}' not found: no {split}/*.json under data.root '{root}'; point data.root "
            "at the folder holding LEAF's train/ and test/ (data/<task>/data)"
        )
    return files


def read_leaf_json(path: Path) -> list[tuple[str, list, list]]:
    """``[(user, x, y), ...]`` of one LEAF file, in the file's user order; DataError
    (naming the file) if it is not JSON or not LEAF's layout."""
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"LEAF file '{path}' is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    except RecursionError as exc:  # LEAF's layout is 4 levels deep; Python's parser recurses per level
        raise DataError(
            f"LEAF file '{path}' is nested too deeply to be LEAF's layout (users, user_data, x, y)"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"LEAF file '{path}' cannot be read ({type(exc).__name__}: {exc})") from exc
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("users"), list)
        or not isinstance(doc.get("user_data"), dict)
    ):
        keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise DataError(f"LEAF file '{path}' needs keys 'users' (a list) and 'user_data' (a mapping); has {keys}")
    out = []
    seen: set = set()
    for user in doc["users"]:
        if not isinstance(user, (str, int)) or isinstance(user, bool):
            raise DataError(f"LEAF file '{path}': 'users' holds {user!r}; user ids are strings")
        if user in seen:  # its samples would count twice
            raise DataError(f"LEAF file '{path}': user {user!r} is listed twice in 'users'")
        seen.add(user)
        data = doc["user_data"].get(user)
        if not isinstance(data, dict) or not isinstance(data.get("x"), list) or not isinstance(data.get("y"), list):
            raise DataError(f"LEAF file '{path}': user {user!r} has no 'x' and 'y' lists in 'user_data'")
        if len(data["x"]) != len(data["y"]):
            raise DataError(
                f"LEAF file '{path}': user {user!r} has {len(data['x'])} samples in 'x' but {len(data['y'])} in 'y'"
            )
        out.append((str(user), data["x"], data["y"]))
    return out


def _read_split(files: list[Path], to_arrays: Any) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]:
    """x, y and ``[(user, n_samples), ...]`` (in sample order) of one split's files.

    Each file is converted to arrays before the next is parsed: FEMNIST's parsed JSON
    (Python floats) is ~20x the size of its uint8 pixels, so all files at once would
    not fit in memory.
    """
    xs, ys, counts = [], [], []
    for path in files:
        rows = [(u, x, y, path) for u, x, y in read_leaf_json(path)]
        x, y = to_arrays(rows)
        xs.append(x)
        ys.append(y)
        counts.extend((u, len(yy)) for u, _, yy, _ in rows)
        del rows
    xs = [x for x in xs if len(x)]
    if len({x.shape[1:] for x in xs}) > 1:
        raise DataError(
            f"LEAF files {files[0].parent}/*.json hold samples of different shapes "
            f"({sorted({x.shape[1:] for x in xs})}); every 'x' must have the same length"
        )
    if not xs:
        return np.zeros((0, 0), np.int64), np.zeros(0, np.int64), counts
    return np.concatenate(xs), np.concatenate(ys), counts


def _femnist_arrays(rows: list[tuple[str, list, list, Path]]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for user, x, y, path in rows:
        if not x:
            continue
        b = class_ids(y, FEMNIST_CLASSES, f"LEAF file '{path}': user {user!r}")
        try:
            a = np.asarray(x, dtype=np.float32)  # null becomes NaN: refused below
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(f"LEAF file '{path}': user {user!r} has non-numeric x ({exc})") from exc
        if a.ndim != 2 or a.shape[1] != FEMNIST_SIDE * FEMNIST_SIDE:
            raise DataError(
                f"LEAF file '{path}': user {user!r}: FEMNIST samples must be {FEMNIST_SIDE**2} pixel "
                f"values, got shape {a.shape}"
            )
        bad = ~((a >= 0.0) & (a <= 1.0))  # NaN included
        if bad.any():
            i, j = (int(v[0]) for v in np.nonzero(bad))
            raise DataError(
                f"LEAF file '{path}': user {user!r}: pixel {j} of sample {i} is {json.dumps(x[i][j])}; FEMNIST pixels are "
                "numbers in [0, 1] (LEAF's vec / 255), nothing is clipped or filled in"
            )
        xs.append(np.rint(a * 255).astype(np.uint8).reshape(-1, 1, FEMNIST_SIDE, FEMNIST_SIDE))
        ys.append(b)
    if not xs:
        return np.zeros((0, 1, FEMNIST_SIDE, FEMNIST_SIDE), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(xs), np.concatenate(ys)


def class_ids(values: list, n_classes: int, where: str) -> np.ndarray:
    """Labels as int64 class ids in 0..n_classes-1; DataError naming the first that is
    not one: a fraction (1.7 would silently become 1), a bool, null, a string, a number
    out of range (10**30 would overflow int64). Whole floats (2.0) are class 2."""
    for i, v in enumerate(values):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (not isinstance(v, float) or v.is_integer())
        if not ok or not 0 <= v < n_classes:
            raise DataError(
                f"{where}: label {json.dumps(v)} of sample {i} is not a class id (a whole number in 0..{n_classes - 1})"
            )
    return np.asarray([int(v) for v in values], dtype=np.int64)


def _shakespeare_arrays(rows: list[tuple[str, list, list, Path]]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for user, x, y, path in rows:
        if not x:
            continue
        try:
            xs.append(text.encode(x, what=f"LEAF file '{path}', user {user!r}"))
            ys.append(text.encode_chars(y, what=f"LEAF file '{path}', user {user!r}"))
        except (ValueError, TypeError) as exc:
            raise DataError(str(exc).splitlines()[0]) from exc
    if not xs:
        return np.zeros((0, 0), np.int64), np.zeros(0, np.int64)
    if len({a.shape[1] for a in xs}) > 1:
        raise DataError(
            f"LEAF file '{rows[0][3]}': sequences of different lengths "
            f"({sorted({a.shape[1] for a in xs})}); every 'x' must have the same length"
        )
    return np.concatenate(xs), np.concatenate(ys)


def _decode(root: Path, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    to_arrays = _femnist_arrays if name == "leaf-femnist" else _shakespeare_arrays
    x_tr, y_tr, users_tr = _read_split(_files(root, "train", name), to_arrays)
    x_te, y_te, users_te = _read_split(_files(root, "test", name), to_arrays)
    if len(y_tr) == 0 or len(y_te) == 0:
        raise DataError(f"dataset '{name}' under '{root}' has no {'training' if len(y_tr) == 0 else 'test'} samples")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(
            f"dataset '{name}': train and test samples differ in shape ({x_tr.shape[1:]} vs {x_te.shape[1:]})"
        )
    users = sorted({u for u, _ in users_tr} | {u for u, _ in users_te})
    index = {u: i for i, u in enumerate(users)}

    def group_ids(counts: list[tuple[str, int]]) -> np.ndarray:
        return np.repeat(np.array([index[u] for u, _ in counts], np.int64), [n for _, n in counts])

    meta: dict[str, Any] = {"users": users}
    if name == "leaf-femnist":
        meta["mean"], meta["std"] = channel_stats(x_tr)
    arrays = {
        "x_train": x_tr,
        "y_train": y_tr,
        "x_test": x_te,
        "y_test": y_te,
        "groups": group_ids(users_tr),
        "groups_test": group_ids(users_te),
    }
    return arrays, meta


def _load(cfg: DataConfig, name: str) -> DatasetBundle:
    root = _root(cfg)
    files = _files(root, "train", name) + _files(root, "test", name)
    key = cache_key(name, {}, fingerprint(files, root))
    arrays, meta = cached(root, name, key, lambda: _decode(root, name))
    if name == "leaf-femnist":
        num_classes, mean, std = FEMNIST_CLASSES, tuple(meta["mean"]), tuple(meta["std"])
        augment = bool(cfg.augment) if cfg.augment is not None else False
    else:
        num_classes, mean, std, augment = text.VOCAB_SIZE, None, None, False
    return DatasetBundle.from_arrays(name, arrays, num_classes, mean, std, augment)


def _key(cfg: DataConfig, seed: int, n_parties: int) -> Hashable:
    return (str(_root(cfg)), cfg.augment)


@register(
    "leaf-femnist",
    reads=("root", "augment"),
    key=_key,
    spec=lambda cfg: ((1, FEMNIST_SIDE, FEMNIST_SIDE), FEMNIST_CLASSES),
    summary="FEMNIST: handwritten 28x28 characters of 62 classes, one natural group per writer",
    paper="LEAF (Caldas et al. 2018), its JSON files under data.root",
)
def load_leaf_femnist(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
    """FEMNIST (LEAF): handwritten 28x28 characters of 62 classes, one group per writer."""
    return _load(cfg, "leaf-femnist")


@register(
    "leaf-shakespeare",
    reads=("root",),
    key=_key,
    spec=lambda cfg: ((80,), text.VOCAB_SIZE),
    text=True,
    summary="Shakespeare: the next character after 80, one natural group per speaking role",
    paper="LEAF (Caldas et al. 2018), its JSON files under data.root",
)
def load_leaf_shakespeare(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
    """Shakespeare (LEAF): next character after 80, one group per speaking role."""
    return _load(cfg, "leaf-shakespeare")
