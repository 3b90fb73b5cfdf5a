"""Helpers shared by the file-format loaders: image decoding and normalisation statistics."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.errors import DataError


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``(N, C, H, W)`` images on the [0, 1] scale.

    ``std = sqrt(E[x^2] - E[x]^2)`` over every pixel of the channel, accumulated in
    float64 chunk by chunk (a float copy of 100k images would not fit in memory). A
    constant channel gets std 1, so normalising never divides by zero.
    """
    n, c = x.shape[0], x.shape[1]
    s1 = np.zeros(c, dtype=np.float64)
    s2 = np.zeros(c, dtype=np.float64)
    for start in range(0, n, chunk):
        part = x[start : start + chunk].astype(np.float64) / 255.0
        s1 += part.sum(axis=(0, 2, 3))
        s2 += np.square(part).sum(axis=(0, 2, 3))
    count = max(n * x.shape[2] * x.shape[3], 1)
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean**2, 0.0))
    std[std < 1e-8] = 1.0
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


def pil_to_array(img: Any, size: int) -> np.ndarray:
    """A PIL image as uint8 ``(C, H, W)``: single-channel modes as L (C = 1), every other
    mode (RGBA, P, CMYK, ...) as RGB (C = 3); resized to ``size`` x ``size`` with bilinear
    filtering when ``size`` > 0."""
    from PIL import Image

    img = img.convert("L" if grey(img.mode) else "RGB")
    if size > 0 and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def is_regular_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` (symlinks followed) is a regular file: opening a FIFO blocks until
    a writer comes, a device may never end; neither is a data set's file."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def open_image(source: Path | bytes, where: str) -> Any:
    """``PIL.Image`` from a file or encoded bytes, fully read; DataError naming ``where``:
    undecodable, not a regular file (a FIFO would block the load forever), or larger
    than PIL's decompression-bomb limit (a small file declaring 20000 x 20000 pixels)."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(source, (bytes, bytearray)) and not is_regular_file(source):
        raise DataError(f"image '{where}' is not a regular file (a FIFO, socket, device or broken link)")
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        img.load()
        return img
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"image '{where}' is refused as a possible decompression bomb: {exc.args[0].split(',')[0]} "
            "(PIL's limit; a data set's images are far smaller)"
        ) from exc
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"image '{where}' cannot be decoded ({type(exc).__name__}: {exc})") from exc


def grey(mode: str) -> bool:
    """Whether a PIL mode is single-channel (kept as 1 channel when every image is)."""
    return mode in ("1", "L", "I", "I;16", "F")


def stack_images(arrays: list[np.ndarray], what: str) -> np.ndarray:
    """Decoded ``(C, H, W)`` arrays as one ``(N, C, H, W)`` uint8 array.

    Grey images among colour ones (Tiny-ImageNet has some) are repeated to 3 channels,
    as PIL's ``convert("RGB")`` would. DataError when sizes differ (``data.image_size``
    resizes them to one).
    """
    if not arrays:
        raise DataError(f"{what}: no images")
    sizes = {a.shape[1:] for a in arrays}
    if len(sizes) > 1:
        sample = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:3])
        raise DataError(
            f"{what}: images have different sizes ({sample}, ...); set data.image_size to resize them all to one size"
        )
    if len({a.shape[0] for a in arrays}) > 1:
        arrays = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in arrays]
    return np.stack(arrays)


def unify_channels(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train and test images with the same channel count (grey repeated to RGB if one is colour)."""
    if a.shape[1] == b.shape[1]:
        return a, b
    return (np.repeat(a, 3, axis=1) if a.shape[1] == 1 else a), (np.repeat(b, 3, axis=1) if b.shape[1] == 1 else b)
