"""Datasets as in-memory tensors (docs/architecture.md, decision 4), behind a registry.

``load_dataset(cfg.data, seed, n_parties)`` returns a :class:`DatasetBundle` (cached per
process); :mod:`fedsim.data.transforms` holds the batch transforms a trainer applies.
Registered: ``cifar10``, ``cifar100``, ``mnist``, ``fmnist``, ``svhn`` (torchvision's
on-disk layout under ``data.root``), ``synthetic`` (FedProx's Synthetic(alpha, beta)),
``synthetic-images`` (learnable class-conditional images made from the seed),
``leaf-femnist`` and ``leaf-shakespeare`` (LEAF's JSON files), ``hf`` (Hugging Face
``datasets``, the optional extra) and ``imagefolder`` (class folders, Tiny-ImageNet's
layout too). The file formats that need decoding are cached beside the data
(:mod:`fedsim.data.cache`).
"""

from __future__ import annotations

from fedsim.data.registry import DatasetBundle, available, clear_cache, input_spec, is_text, load_dataset, register

# importing a family module registers its datasets (the order is available()'s order)
# isort: off
from fedsim.data import torchvision_sets as _torchvision_sets  # noqa: F401
from fedsim.data import synthetic as _synthetic  # noqa: F401
from fedsim.data import synthetic_images as _synthetic_images  # noqa: F401
from fedsim.data import leaf as _leaf  # noqa: F401
from fedsim.data import hf as _hf  # noqa: F401
from fedsim.data import imagefolder as _imagefolder  # noqa: F401
# isort: on

__all__ = ["DatasetBundle", "available", "register", "load_dataset", "input_spec", "is_text", "clear_cache"]
