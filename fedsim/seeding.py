"""Derived seeds: every random draw comes from ``seed`` and what it is for.

``derive(seed, "train", round, party)`` gives the same integer in every process and
on every engine, so a client's shuffling, augmentation and dropout do not depend on
which worker runs it or in which order: the basis of exact repeats, exact resumes
and equal results on the local and Ray engines (DESIGN.md, decision 5).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def _key(part: int | str) -> int:
    if isinstance(part, str):
        return zlib.crc32(part.encode())
    return int(part)


def derive(seed: int, *parts: int | str) -> int:
    """A 63-bit seed from ``seed`` and a purpose path such as ("train", round, party)."""
    ss = np.random.SeedSequence([int(seed), *(_key(p) for p in parts)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def rng(seed: int, *parts: int | str) -> np.random.Generator:
    return np.random.default_rng(derive(seed, *parts))


def torch_generator(seed: int, *parts: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive(seed, *parts))
    return g
