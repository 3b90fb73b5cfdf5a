"""Image folders (torchvision's ``ImageFolder`` layout), Tiny-ImageNet's included.

``data.root`` holds ``train/<class>/**/<image>`` and an evaluation split, ``val/`` if it
exists, else ``test/``, in one of two layouts:

- ``val/<class>/**/<image>`` (ImageFolder's);
- Tiny-ImageNet's: ``val/images/<image>`` with ``val/val_annotations.txt`` giving each
  image's class (``val_0.JPEG<TAB>n03444034<TAB>x0<TAB>y0<TAB>x1<TAB>y1``).

Classes are the training folders' names in sorted order (torchvision's
``find_classes``); files are those torchvision's ``make_dataset`` finds with its image
extensions (Tiny-ImageNet's ``train/<wnid>/images/*.JPEG`` included, its
``*_boxes.txt`` left out). Images decode with PIL to uint8 ``(N, C, H, W)``: one channel
when every image is grey, else RGB (grey images repeated); ``data.image_size`` resizes
to a square (bilinear), needed when the sizes differ. Normalisation statistics are the
training images' per-channel mean and std. Decoded once and cached beside the folders
(:mod:`fedsim.data.cache`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Hashable

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from .cache import cache_key, cached, fingerprint
from .images import channel_stats, open_image, pil_to_array, stack_images, unify_channels
from .registry import DatasetBundle, register

ANNOTATIONS = "val_annotations.txt"


def _root(cfg: DataConfig) -> Path:
    return Path(str(cfg.root)).expanduser().resolve()


def _extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return IMG_EXTENSIONS


def list_train(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, [(path, class index), ...]) of ``root/train`` (torchvision's rules)."""
    from torchvision.datasets.folder import find_classes, make_dataset

    train = root / "train"
    if not train.is_dir():
        raise DataError(f"dataset 'imagefolder' not found: no train/ folder under data.root '{root}' (expected "
                        "train/<class>/<image> and val/ or test/)")
    try:
        classes, class_to_idx = find_classes(train)
        samples = make_dataset(train, class_to_idx, extensions=_extensions(), allow_empty=False)
    except FileNotFoundError as exc:
        raise DataError(f"dataset 'imagefolder': {train}: {exc}") from exc
    return classes, samples


def list_eval(root: Path, class_to_idx: dict[str, int]) -> tuple[Path, list[tuple[str, int]], Path | None]:
    """(folder, samples, annotations file or None) of the evaluation split."""
    from torchvision.datasets.folder import find_classes, make_dataset

    folder = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if folder is None:
        raise DataError(f"dataset 'imagefolder': no val/ or test/ folder under data.root '{root}'")
    ann = folder / ANNOTATIONS
    if ann.is_file():  # Tiny-ImageNet
        samples = []
        for n, line in enumerate(ann.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise DataError(f"'{ann}' line {n}: expected 'file<TAB>class<TAB>...', got {line[:60]!r}")
            fname, cls = parts[0], parts[1]
            if cls not in class_to_idx:
                raise DataError(f"'{ann}' line {n}: class {cls!r} has no folder in train/")
            path = folder / "images" / fname
            if not path.is_file():
                path = folder / fname
            if not path.is_file():
                raise DataError(f"'{ann}' line {n}: image '{fname}' not found in {folder / 'images'}")
            samples.append((str(path), class_to_idx[cls]))
        return folder, samples, ann
    try:
        eval_classes, _ = find_classes(folder)
    except FileNotFoundError as exc:
        raise DataError(f"dataset 'imagefolder': {folder} has no class folders (and no {ANNOTATIONS})") from exc
    unknown = sorted(set(eval_classes) - set(class_to_idx))
    if unknown:
        raise DataError(f"dataset 'imagefolder': {folder.name}/ has class folders that train/ lacks: "
                        f"{', '.join(unknown[:5])}")
    samples = make_dataset(folder, class_to_idx, extensions=_extensions(), allow_empty=True)
    return folder, samples, None


def _decode_all(samples: list[tuple[str, int]], size: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    def decode(item: tuple[str, int]) -> np.ndarray:
        return pil_to_array(open_image(Path(item[0]), item[0]), size)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
        arrays = list(pool.map(decode, samples, chunksize=256))
    return stack_images(arrays, what), np.array([c for _, c in samples], dtype=np.int64)


def _decode(root: Path, size: int, train: list[tuple[str, int]], evals: list[tuple[str, int]], n_classes: int
            ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    x_tr, y_tr = _decode_all(train, size, f"imagefolder '{root}/train'")
    x_te, y_te = _decode_all(evals, size, f"imagefolder '{root}' evaluation split")
    if x_tr.shape[2:] != x_te.shape[2:]:
        raise DataError(f"imagefolder '{root}': train images are {x_tr.shape[2]}x{x_tr.shape[3]}, evaluation images "
                        f"{x_te.shape[2]}x{x_te.shape[3]}; set data.image_size to resize both")
    x_tr, x_te = unify_channels(x_tr, x_te)
    mean, std = channel_stats(x_tr)
    return ({"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te},
            {"num_classes": n_classes, "mean": mean, "std": std})


def _key(cfg: DataConfig, seed: int, n_parties: int) -> Hashable:
    return (str(_root(cfg)), int(cfg.image_size), cfg.augment)


@register("imagefolder", key=_key)
def load_imagefolder(cfg: DataConfig, seed: int, n_parties: int) -> DatasetBundle:
    """Images in class folders (``train/`` and ``val/`` or ``test/``), Tiny-ImageNet's layout too."""
    root = _root(cfg)
    classes, train = list_train(root)
    folder, evals, ann = list_eval(root, {c: i for i, c in enumerate(classes)})
    if not evals:
        raise DataError(f"dataset 'imagefolder': no images in '{folder}'")
    files = [Path(p) for p, _ in train] + [Path(p) for p, _ in evals] + ([ann] if ann else [])
    size = int(cfg.image_size)
    key = cache_key("imagefolder", {"image_size": size, "classes": classes}, fingerprint(files, root))
    arrays, meta = cached(root, "imagefolder", key, lambda: _decode(root, size, train, evals, len(classes)))
    return DatasetBundle(
        "imagefolder",
        torch.from_numpy(arrays["x_train"]),
        torch.from_numpy(arrays["y_train"]),
        torch.from_numpy(arrays["x_test"]),
        torch.from_numpy(arrays["y_test"]),
        int(meta["num_classes"]),
        tuple(meta["mean"]),
        tuple(meta["std"]),
        bool(cfg.augment),
    )
