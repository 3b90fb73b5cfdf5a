"""Datasets as in-memory tensors (DESIGN.md, decision 4), behind a registry.

``load_dataset(cfg.data, seed, n_parties)`` returns a :class:`DatasetBundle` (cached per
process); :mod:`fedsim.data.transforms` holds the batch transforms a trainer applies.
Registered: ``cifar10``, ``cifar100``, ``mnist``, ``fmnist``, ``svhn`` (torchvision's
on-disk layout under ``data.root``), ``synthetic`` (FedProx's Synthetic(alpha, beta)) and
``synthetic-images`` (learnable class-conditional images made from the seed).
"""

from __future__ import annotations

from .registry import DatasetBundle, available, clear_cache, input_spec, load_dataset, register

# importing a family module registers its datasets (the order is available()'s order)
from . import torchvision_sets as _torchvision_sets  # noqa: E402,F401
from . import synthetic as _synthetic  # noqa: E402,F401
from . import synthetic_images as _synthetic_images  # noqa: E402,F401

__all__ = ["DatasetBundle", "available", "register", "load_dataset", "input_spec", "clear_cache"]
