"""Batch transforms that run on the training device (docs/architecture.md, decision 4).

Images stay uint8 in memory; a mini-batch is indexed out, optionally augmented, then
converted to normalised float32 here. Every random draw comes from the generator the
caller passes (the trainer seeds one per party and round), so a run repeats exactly.

The intended order for a training batch, matching torchvision's CIFAR pipeline
(``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``)::

    x = augment_batch(x_uint8, gen)          # zero padding = black pixels, as in torchvision
    x = to_float(x, bundle.mean, bundle.std)
    x = add_feature_noise(x, sigma_i, gen)   # NIID-Bench's feature skew, in normalised space
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

PAD = 4  # pixels of zero padding before the random crop (CIFAR convention)


def to_float(x_uint8: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> Tensor:
    """``(B, C, H, W)`` uint8 -> float32 ``(x / 255 - mean) / std`` per channel, on x's device.

    Any other input is returned unchanged: floating-point features (tabular data) and
    int64 token sequences (text, which the model embeds). With ``mean``/``std`` None an
    image is only scaled to [0, 1].
    """
    if x_uint8.dtype != torch.uint8:
        return x_uint8
    x = x_uint8.to(torch.float32).div_(255.0)
    if mean is None or std is None:
        return x
    if x.dim() != 4 or len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(
            f"to_float: need (B, C, H, W) with C = len(mean) = len(std); got {tuple(x.shape)}, "
            f"{len(mean)} means, {len(std)} stds"
        )
    m, s = _norm_tensors(tuple(mean), tuple(std), x.device)
    return x.sub_(m).div_(s)


_NORM: dict[tuple, tuple[Tensor, Tensor]] = {}


def _norm_tensors(mean: tuple, std: tuple, device: torch.device) -> tuple[Tensor, Tensor]:
    """(1, C, 1, 1) mean and std on ``device``, made once (to_float runs every batch)."""
    key = (mean, std, str(device))
    hit = _NORM.get(key)
    if hit is None:
        hit = _NORM[key] = (
            torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1),
            torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1),
        )
    return hit


def _draw_device(generator: torch.Generator) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def augment_batch(x: Tensor, generator: torch.Generator, pad: int = PAD) -> Tensor:
    """CIFAR-style augmentation of a whole batch: random crop after zero padding, random flip.

    Each sample is padded with ``pad`` zero pixels on every side, a window of the
    original size is cut at a uniformly random offset in ``[0, 2 pad]`` along each axis
    (a shift of at most ``pad`` pixels, zero-filled), and the window is flipped left-right
    with probability 1/2 (He et al. 2016, Sec. 4.2). Vectorised: one gather for the batch.

    Works on any device and on float or uint8 input; keeps shape and dtype. The offsets
    and flips are drawn on the generator's device and moved to ``x``'s.
    """
    if x.dim() != 4:
        raise ValueError(f"augment_batch: need (B, C, H, W) images, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if b == 0:
        return x
    dev = _draw_device(generator)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    flip = (torch.rand((b,), generator=generator, device=dev) < 0.5).to(x.device)

    padded = x.new_zeros((b, c, h + 2 * pad, w + 2 * pad))
    padded[:, :, pad : pad + h, pad : pad + w] = x
    rows = oy[:, None] + torch.arange(h, device=x.device)  # (B, H) rows of the padded image
    cols = torch.arange(w, device=x.device).expand(b, w)
    # a flip reads the window's columns right to left
    cols = torch.where(flip[:, None], (w - 1) - cols, cols) + ox[:, None]  # (B, W)
    # one flat gather: index (B, 1, H*W) into the padded (B, C, (H+2p)*(W+2p)) plane
    flat = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).reshape(b, 1, h * w)
    out = torch.gather(padded.reshape(b, c, -1), 2, flat.expand(b, c, h * w))
    return out.reshape(b, c, h, w)


def add_feature_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """``x + N(0, sigma^2)`` elementwise (NIID-Bench's feature-distribution skew).

    A no-op (the same tensor) for ``sigma == 0``. Needs floating-point input: apply it
    after :func:`to_float`, in normalised space, as NIID-Bench does.
    """
    if sigma == 0:
        return x
    if not x.is_floating_point():
        raise TypeError(f"add_feature_noise needs floating-point input (apply to_float first), got {x.dtype}")
    noise = torch.randn(x.shape, generator=generator, device=_draw_device(generator), dtype=x.dtype)
    return x + noise.to(x.device).mul_(float(sigma))
