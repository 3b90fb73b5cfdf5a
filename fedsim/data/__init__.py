"""Datasets as in-memory tensors (docs/architecture.md, decision 4), behind a registry.

``load_dataset(cfg.data, seed, n_parties)`` returns a :class:`DatasetBundle` (cached per
process); :mod:`fedsim.data.transforms` holds the batch transforms a trainer applies.
Built in: ``cifar10``, ``cifar100``, ``mnist``, ``fmnist``, ``svhn`` (torchvision's
on-disk layout under ``data.root``), ``synthetic`` (FedProx's Synthetic(alpha, beta)),
``synthetic-images`` (learnable class-conditional images made from the seed),
``leaf-femnist`` and ``leaf-shakespeare`` (LEAF's JSON files), ``hf`` (Hugging Face
``datasets``, the optional extra) and ``imagefolder`` (class folders, Tiny-ImageNet's
layout too). Each is a plug-in of :mod:`fedsim.data.registry` in its family's module,
found on first use (``fedsim plugins datasets`` lists them). The file formats that need
decoding are cached beside the data (:mod:`fedsim.data.cache`).
"""

from __future__ import annotations

from fedsim.data.registry import (
    DATASETS,
    Dataset,
    DatasetBundle,
    available,
    clear_cache,
    input_spec,
    is_text,
    load_dataset,
    register,
    unregister,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetBundle",
    "available",
    "clear_cache",
    "input_spec",
    "is_text",
    "load_dataset",
    "register",
    "unregister",
]
