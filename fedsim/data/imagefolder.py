"""Image folders (torchvision's ``ImageFolder`` layout), Tiny-ImageNet's included.

``data.root`` holds ``train/<class>/**/<image>`` and an evaluation split, ``val/`` if it
exists, else ``test/``, in one of two layouts:

- ``val/<class>/**/<image>`` (ImageFolder's);
- Tiny-ImageNet's: ``val/images/<image>`` with ``val/val_annotations.txt`` giving each
  image's class (``val_0.JPEG<TAB>n03444034<TAB>x0<TAB>y0<TAB>x1<TAB>y1``).

Classes are the training folders' names in sorted order, and files are found as
torchvision's ``find_classes`` and ``make_dataset`` find them (its image extensions,
any depth, the same order; Tiny-ImageNet's ``train/<wnid>/images/*.JPEG`` included,
its ``*_boxes.txt`` left out), by one ``os.scandir`` walk that also reads each file's
size and modification time for the cache key (the listing is most of a cached load). Images decode with PIL to uint8 ``(N, C, H, W)``: one channel
when every image is grey, else RGB (grey images repeated); ``data.image_size`` resizes
to a square (bilinear), needed when the sizes differ. Normalisation statistics are the
training images' per-channel mean and std. Decoded once and cached beside the folders
(:mod:`fedsim.data.cache`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data.cache import cache_key, cached, fingerprint
from fedsim.data.images import channel_stats, open_image, pil_to_array, stack_images, unify_channels
from fedsim.data.registry import DatasetBundle, register
from fedsim.errors import DataError
from fedsim.schema.sections import DataConfig
from fedsim.util.params import hp

log = logging.getLogger(__name__)

ANNOTATIONS = "val_annotations.txt"


def _root(cfg: DataConfig) -> Path:
    return Path(str(cfg.root)).expanduser().resolve()


# torchvision's IMG_EXTENSIONS (torchvision.datasets.folder), matched case-insensitively
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# (path, class index, size, mtime_ns) of one image file
Entry = tuple[str, int, int, int]


def find_classes(folder: Path) -> list[str]:
    """The class folders of ``folder``, sorted (torchvision's ``find_classes``)."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir())


def scan(folder: Path, class_to_idx: dict[str, int]) -> list[Entry]:
    """Every image under ``folder/<class>/`` (any depth, symlinks followed) with its size
    and modification time, in torchvision ``make_dataset``'s order: classes sorted, then
    directories, then file names. One ``stat`` per file and no ``Path`` objects: on a
    warm cache the listing is what a second load of 100k images costs."""
    out: list[Entry] = []
    skipped: list[str] = []
    for cls in sorted(class_to_idx):
        top = folder / cls
        if not top.is_dir():
            continue
        found: list[tuple[str, str, int, int]] = []
        stack = [str(top)]
        while stack:
            root = stack.pop()
            with os.scandir(root) as it:
                for e in it:
                    if e.is_dir():
                        stack.append(e.path)
                    elif e.name.lower().endswith(IMG_EXTENSIONS):
                        if not e.is_file():  # a FIFO would block the load forever; a broken link has no stat
                            skipped.append(e.path)
                            continue
                        st = e.stat()
                        found.append((root, e.name, st.st_size, st.st_mtime_ns))
        found.sort()
        k = class_to_idx[cls]
        out.extend((os.path.join(r, n), k, size, mtime) for r, n, size, mtime in found)
    if skipped:
        log.warning(
            "imagefolder '%s': skipped %d entr%s with an image name that %s not a regular file (a FIFO, socket, "
            "device or broken link): %s",
            folder,
            len(skipped),
            "y" if len(skipped) == 1 else "ies",
            "is" if len(skipped) == 1 else "are",
            ", ".join(sorted(skipped)[:3]) + (", ..." if len(skipped) > 3 else ""),
        )
    return out


def list_train(root: Path) -> tuple[list[str], list[Entry]]:
    """(classes, entries) of ``root/train``."""
    train = root / "train"
    if not train.is_dir():
        raise DataError(
            f"dataset 'imagefolder' not found: no train/ folder under data.root '{root}' (expected "
            "train/<class>/<image> and val/ or test/)"
        )
    classes = find_classes(train)
    if not classes:
        raise DataError(f"dataset 'imagefolder': {train} has no class folders")
    entries = scan(train, {c: i for i, c in enumerate(classes)})
    empty = sorted(set(classes) - {classes[e[1]] for e in entries})
    if empty:
        raise DataError(
            f"dataset 'imagefolder': no images ({', '.join(IMG_EXTENSIONS)}) in train/ class folders "
            f"{', '.join(empty[:5])}"
        )
    return classes, entries


def list_eval(root: Path, class_to_idx: dict[str, int]) -> tuple[Path, list[Entry], Path | None]:
    """(folder, entries, annotations file or None) of the evaluation split."""
    folder = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if folder is None:
        raise DataError(f"dataset 'imagefolder': no val/ or test/ folder under data.root '{root}'")
    ann = folder / ANNOTATIONS
    if ann.is_file():  # Tiny-ImageNet
        entries: list[Entry] = []
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
            st = path.stat()
            entries.append((str(path), class_to_idx[cls], st.st_size, st.st_mtime_ns))
        return folder, entries, ann
    eval_classes = find_classes(folder)
    if not eval_classes:
        raise DataError(f"dataset 'imagefolder': {folder} has no class folders (and no {ANNOTATIONS})")
    unknown = sorted(set(eval_classes) - set(class_to_idx))
    if unknown:
        raise DataError(
            f"dataset 'imagefolder': {folder.name}/ has class folders that train/ lacks: {', '.join(unknown[:5])}"
        )
    return folder, scan(folder, class_to_idx), None


def _decode_all(samples: list[Entry], size: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    def decode(item: Entry) -> np.ndarray:
        return pil_to_array(open_image(Path(item[0]), item[0]), size)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
        arrays = list(pool.map(decode, samples, chunksize=256))
    return stack_images(arrays, what), np.array([e[1] for e in samples], dtype=np.int64)


def _decode(
    root: Path, size: int, train: list[Entry], evals: list[Entry], n_classes: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    x_tr, y_tr = _decode_all(train, size, f"imagefolder '{root}/train'")
    x_te, y_te = _decode_all(evals, size, f"imagefolder '{root}' evaluation split")
    if x_tr.shape[2:] != x_te.shape[2:]:
        raise DataError(
            f"imagefolder '{root}': train images are {x_tr.shape[2]}x{x_tr.shape[3]}, evaluation images "
            f"{x_te.shape[2]}x{x_te.shape[3]}; set data.image_size to resize both"
        )
    x_tr, x_te = unify_channels(x_tr, x_te)
    mean, std = channel_stats(x_tr)
    return (
        {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te},
        {"num_classes": n_classes, "mean": mean, "std": std},
    )


def _key(cfg: DataConfig, seed: int, n_parties: int) -> Hashable:
    return (str(_root(cfg)), int(cfg.image_size), cfg.augment)


@dataclass
class ImageFolderParams(DataConfig):
    """``data.*`` with ``imagefolder``: the common keys and the image size."""

    image_size: int = hp(0, ge=0, help="resize images to a square of this side (bilinear); 0 = as stored", source="-")


@register(
    "imagefolder",
    reads=("root", "augment"),
    key=_key,
    summary="images in class folders (train/ and val/ or test/), Tiny-ImageNet's layout too",
    paper="torchvision's ImageFolder layout; Tiny-ImageNet (Le & Yang 2015)",
    Params=ImageFolderParams,
)
def load_imagefolder(cfg: ImageFolderParams, seed: int, n_parties: int) -> DatasetBundle:
    """Images in class folders (``train/`` and ``val/`` or ``test/``), Tiny-ImageNet's layout too."""
    root = _root(cfg)
    classes, train = list_train(root)
    folder, evals, ann = list_eval(root, {c: i for i, c in enumerate(classes)})
    if not evals:
        raise DataError(f"dataset 'imagefolder': no images in '{folder}'")
    size = int(cfg.image_size)
    skip = len(str(root)) + 1
    sources = [(e[0][skip:], e[2], e[3]) for e in train + evals] + (fingerprint([ann], root) if ann else [])
    key = cache_key("imagefolder", {"image_size": size, "classes": classes}, sources)
    arrays, meta = cached(root, "imagefolder", key, lambda: _decode(root, size, train, evals, len(classes)))
    return DatasetBundle.from_arrays(
        "imagefolder", arrays, int(meta["num_classes"]), tuple(meta["mean"]), tuple(meta["std"]), bool(cfg.augment)
    )
