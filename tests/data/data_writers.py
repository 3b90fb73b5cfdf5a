"""Small data sets written in the real on-disk formats (LEAF JSON, image folders,
Hugging Face datasets), with the exact arrays they hold, for the loader tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedsim.data.text import ALPHABET

# LEAF: users -> samples; user names sort as u0 < u1 < ...
FEMNIST_USERS = {"u0": (5, 2), "u1": (7, 3), "u2": (4, 2), "u3": (6, 2)}  # user: (train, test)


def femnist_pixels(n: int, seed: int) -> np.ndarray:
    """(n, 784) floats in [0, 1] that are exact multiples of 1/255 (round-trip to uint8)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 784)) / 255.0


def write_leaf_femnist(root: Path, users: dict = FEMNIST_USERS) -> dict:
    """LEAF FEMNIST JSON under root/train, root/test (train users split over two files).

    Returns ``{split: (x uint8 (N, 1, 28, 28), y, user per sample)}`` in file order."""
    expected: dict = {"train": ([], [], []), "test": ([], [], [])}
    for split, col in (("train", 0), ("test", 1)):
        (root / split).mkdir(parents=True, exist_ok=True)
        names = list(users)
        chunks = [names[:2], names[2:]] if split == "train" else [names]
        for k, chunk in enumerate(chunks):
            doc = {"users": chunk, "num_samples": [], "user_data": {}}
            for u in chunk:
                n = users[u][col]
                seed = int(u[1:]) * 10 + col
                x = femnist_pixels(n, seed)
                y = [(int(u[1:]) * 7 + i) % 62 for i in range(n)]
                doc["num_samples"].append(n)
                doc["user_data"][u] = {"x": x.tolist(), "y": y}
                expected[split][0].append(np.rint(x * 255).astype(np.uint8).reshape(n, 1, 28, 28))
                expected[split][1].extend(y)
                expected[split][2].extend([u] * n)
            (root / split / f"all_data_{k}_niid_0_keep_0_{split}_9.json").write_text(json.dumps(doc))
    return {s: (np.concatenate(v[0]), np.array(v[1]), v[2]) for s, v in expected.items()}


SHAKESPEARE_USERS = {"THE_TEMPEST_MIRANDA": (9, 3), "HAMLET_HAMLET": (12, 4), "MACBETH_LADY": (8, 3)}


def shakespeare_text(seed: int, n: int, length: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    letters = np.array(list(ALPHABET))
    stream = "".join(rng.choice(letters[1:], n + length))  # no newlines: easier to read in a failure
    return [stream[i : i + length] for i in range(n)], [stream[i + length] for i in range(n)]


def write_leaf_shakespeare(root: Path, users: dict = SHAKESPEARE_USERS, length: int = 20) -> dict:
    """LEAF Shakespeare JSON (x: strings of ``length`` characters, y: the next one)."""
    expected: dict = {"train": ([], [], []), "test": ([], [], [])}
    for split, col in (("train", 0), ("test", 1)):
        (root / split).mkdir(parents=True, exist_ok=True)
        doc = {"users": list(users), "num_samples": [], "user_data": {}, "hierarchies": ["a"] * len(users)}
        for i, (u, counts) in enumerate(users.items()):
            x, y = shakespeare_text(i * 2 + col, counts[col], length)
            doc["num_samples"].append(len(x))
            doc["user_data"][u] = {"x": x, "y": y}
            expected[split][0].extend(x)
            expected[split][1].extend(y)
            expected[split][2].extend([u] * len(x))
        (root / split / f"all_data_niid_0_keep_0_{split}_9.json").write_text(json.dumps(doc))
    return expected


def png_images(n: int, seed: int, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (n, H, W, C) images (C = 1: (n, H, W))."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    arr = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    return arr[..., 0] if c == 1 else arr


def write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG of a few dozen bytes that declares ``width`` x ``height`` grey pixels
    (400 million by default: a decompression bomb; PIL refuses more than 179 million)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def call_releasing_fifo(fn, fifo: Path, timeout: float = 60.0):
    """``fn()``, failing (not hanging) if it waits on ``fifo``: after ``timeout`` the FIFO
    gets a writer, which releases a blocked reader, and the test fails."""
    import os
    import threading

    import pytest

    done: dict = {}

    def target() -> None:
        try:
            done["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test's thread)
            done["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"waited on the FIFO '{fifo}'")
    if "error" in done:
        raise done["error"]
    return done["value"]
