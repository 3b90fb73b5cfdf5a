"""Hugging Face ``datasets`` (the optional extra ``fedsim[hf]``) as fedsim's tensors.

``data.hf_path`` is one of

- a directory written by ``DatasetDict.save_to_disk`` (read with ``datasets.load_from_disk``);
- a directory of data files (parquet, arrow, csv, json, ...) whose names say the split
  (``train-00000.parquet``, ``test.parquet``, ``data/train/*.arrow``: Hugging Face's
  own split-name patterns), read with ``datasets.load_dataset(directory)``;
- a Hub name (``flwrlabs/femnist``) found in the local Hugging Face cache
  (``HF_DATASETS_CACHE``); only with ``data.download: true`` is the Hub asked.

Splits ``data.hf_split_train`` / ``data.hf_split_test``; columns:

- inputs: ``data.hf_image_key`` (an ``Image`` feature, or uint8 ``(H, W[, C])`` arrays)
  decoded to uint8 ``(N, C, H, W)`` (grey images keep one channel; ``data.image_size``
  resizes), or ``data.hf_text_key`` (strings, encoded in LEAF's 80-character alphabet
  as int64 ``(N, L)`` tokens: :mod:`fedsim.data.text`);
- ``data.hf_label_key``: a ``ClassLabel`` (its classes), integers (0..max), single
  characters with a text key (the next-character task: LEAF's alphabet), or other
  strings (classes in sorted order);
- ``data.hf_group_key``: any column (writer, user id): its distinct values, sorted, are
  the natural groups of both splits (``groups``, ``groups_test``).

Normalisation statistics are the training images' per-channel mean and std. Decoded
once and cached beside the data (:mod:`fedsim.data.cache`; a Hub dataset's cache goes
under ``data.root``); a cached entry is read without importing ``datasets`` at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data import text
from fedsim.data.cache import CACHE_DIR, cache_key, cached, fingerprint
from fedsim.data.images import channel_stats, open_image, pil_to_array, stack_images, unify_channels
from fedsim.data.registry import DatasetBundle, register
from fedsim.errors import DataError
from fedsim.schema.sections import DataConfig
from fedsim.util.params import hp

log = logging.getLogger(__name__)

PIP_HINT = "pip install 'fedsim[hf]'"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def import_datasets() -> Any:
    """The ``datasets`` module; DataError naming the pip command when it is missing."""
    try:
        import datasets
    except ImportError as exc:
        raise DataError(f"data.dataset 'hf' needs the Hugging Face datasets library: {PIP_HINT}") from exc
    return datasets


# ----------------------------------------------------------------------- sources


def _source(cfg: DataConfig) -> tuple[str, Path]:
    """('disk' | 'files' | 'hub', path): how ``data.hf_path`` is read."""
    raw = str(cfg.hf_path)
    p = Path(raw).expanduser()
    if p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file()):
        return "disk", p.resolve()
    if p.is_dir():
        return "files", p.resolve()
    if p.exists():
        raise DataError(
            f"data.hf_path '{raw}' is a file; give the directory that holds the data files of every split "
            "(e.g. train.parquet and test.parquet) or a save_to_disk directory"
        )
    if not _HUB_NAME.match(raw):
        raise DataError(f"data.hf_path '{raw}' does not exist (and is not a Hub name such as 'user/dataset')")
    return "hub", p


def _source_files(where: Path) -> list[Path]:
    return [f for f in where.rglob("*") if f.is_file() and CACHE_DIR not in f.relative_to(where).parts]


@contextlib.contextmanager
def _quiet(datasets: Any) -> Iterator[None]:
    """The library's progress bars and cache notices off while fedsim reads (restored after)."""
    bars = datasets.is_progress_bar_enabled()
    level = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


def _hf_cache_dir() -> str:
    datasets = import_datasets()
    return os.path.expanduser(str(datasets.config.HF_DATASETS_CACHE))


def _open(kind: str, where: Path, cfg: DataConfig, tmp: str) -> Any:
    """The DatasetDict of the source (memory-mapped Arrow: cheap until decoded)."""
    datasets = import_datasets()
    raw = str(cfg.hf_path)
    try:
        with _quiet(datasets):
            dd = _read_dict(datasets, kind, where, cfg, tmp)
    except DataError:
        raise
    except Exception as exc:  # the library raises ValueError, FileNotFoundError, its own errors...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if kind == "hub" and not cfg.download:
            raise DataError(
                f"data.hf_path '{raw}' is neither a local directory nor a Hub dataset in the local Hugging "
                f"Face cache ({_hf_cache_dir()}): {first}; set data.download: true to fetch it"
            ) from exc
        raise DataError(
            f"data.hf_path '{raw}' cannot be read by Hugging Face datasets: {type(exc).__name__}: {first}"
        ) from exc
    if not isinstance(dd, datasets.DatasetDict):
        raise DataError(
            f"data.hf_path '{raw}' holds a single Dataset without splits; save a DatasetDict with "
            f"'{cfg.hf_split_train}' and '{cfg.hf_split_test}' splits"
        )
    for split in (cfg.hf_split_train, cfg.hf_split_test):
        if split not in dd:
            key = "hf_split_train" if split == cfg.hf_split_train else "hf_split_test"
            raise DataError(
                f"config key 'data.{key}' = {split!r} is not a split of '{raw}'; splits: {', '.join(dd.keys())}"
            )
    return dd


def _read_dict(datasets: Any, kind: str, where: Path, cfg: DataConfig, tmp: str) -> Any:
    raw = str(cfg.hf_path)
    if kind == "disk":
        return datasets.load_from_disk(str(where))
    if kind == "files":
        # tmp: the Arrow copy that load_dataset makes of data files lives only while decoding
        return datasets.load_dataset(str(where), cache_dir=tmp)
    if cfg.download:
        return datasets.load_dataset(raw)
    # the library's own offline path: the newest prepared copy in the local cache
    from datasets.packaged_modules.cache.cache import Cache

    builder = Cache(
        cache_dir=_hf_cache_dir(), dataset_name=raw.split("/")[-1], repo_id=raw, version="auto", hash="auto"
    )
    return builder.as_dataset()


# ---------------------------------------------------------------------- decoding


def _column(ds: Any, key: str, cfg_key: str, split: str, raw: str) -> Any:
    if key not in ds.column_names:
        raise DataError(
            f"config key 'data.{cfg_key}' = {key!r} is not a column of split '{split}' of '{raw}'; "
            f"columns: {', '.join(ds.column_names)}"
        )
    return ds.features[key]


def _images(ds: Any, key: str, size: int, split: str, raw: str) -> np.ndarray:
    datasets = import_datasets()
    feature = _column(ds, key, "hf_image_key", split, raw)
    what = f"split '{split}' of '{raw}', column '{key}'"
    if isinstance(feature, datasets.Image):
        items = ds.cast_column(key, datasets.Image(decode=False))[key]

        def decode(item: dict) -> np.ndarray:
            src = item.get("bytes") or item.get("path")
            if src is None:
                raise DataError(f"{what}: an image has neither bytes nor a path")
            return pil_to_array(open_image(src if isinstance(src, bytes) else Path(src), what), size)

        # PIL decodes with the GIL released: threads use every core
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            arrays = list(pool.map(decode, items, chunksize=256))
        return stack_images(arrays, what)
    try:
        arr = np.asarray(ds.with_format("numpy")[key])
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: not images ({feature}); need an Image feature or uint8 (H, W[, C]) arrays") from exc
    if arr.dtype.kind not in "ui" or arr.ndim not in (3, 4) or (arr.size and (arr.min() < 0 or arr.max() > 255)):
        raise DataError(
            f"{what}: not images ({arr.dtype} {arr.shape[1:]}); need an Image feature or uint8 (H, W[, C]) arrays"
        )
    arr = arr.astype(np.uint8)
    arr = arr[:, None] if arr.ndim == 3 else np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
    if size > 0 and arr.shape[2:] != (size, size):
        from PIL import Image

        arr = np.stack(
            [pil_to_array(Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)), size) for a in arr]
        )
    return arr


def _labels(tr: Any, te: Any, key: str, text_mode: bool, raw: str) -> tuple[np.ndarray, np.ndarray, int]:
    datasets = import_datasets()
    feature = _column(tr, key, "hf_label_key", "train", raw)
    _column(te, key, "hf_label_key", "test", raw)
    y_tr, y_te = list(tr[key]), list(te[key])
    what = f"label column '{key}' of '{raw}'"
    if isinstance(feature, datasets.ClassLabel):
        return np.asarray(y_tr, np.int64), np.asarray(y_te, np.int64), int(feature.num_classes)
    if all(isinstance(v, str) for v in y_tr + y_te):
        if text_mode and all(len(v) == 1 for v in y_tr + y_te):
            try:  # the next character, in the inputs' alphabet
                return text.encode_chars(y_tr, what), text.encode_chars(y_te, what), text.VOCAB_SIZE
            except ValueError as exc:
                raise DataError(str(exc)) from exc
        names = sorted(set(y_tr) | set(y_te))
        index = {n: i for i, n in enumerate(names)}
        return (np.array([index[v] for v in y_tr], np.int64), np.array([index[v] for v in y_te], np.int64), len(names))
    try:
        a, b = np.asarray(y_tr), np.asarray(y_te)
    except (TypeError, ValueError):  # ragged or mixed: not class ids, refused just below with what they are
        a = b = np.zeros(0, dtype=object)
    if a.dtype.kind not in "iub" or b.dtype.kind not in "iub" or a.ndim != 1 or b.ndim != 1:
        raise DataError(f"{what} holds {feature}; need class ids (ClassLabel or integers) or class names (strings)")
    a, b = a.astype(np.int64), b.astype(np.int64)
    if min(a.min(initial=0), b.min(initial=0)) < 0:
        raise DataError(f"{what} has a negative class id; class ids must be 0, 1, 2, ...")
    return a, b, int(max(a.max(initial=0), b.max(initial=0))) + 1


def _groups(tr: Any, te: Any, key: str, raw: str) -> tuple[np.ndarray, np.ndarray | None]:
    _column(tr, key, "hf_group_key", "train", raw)
    g_tr = list(tr[key])
    g_te = list(te[key]) if key in te.column_names else None
    values = g_tr + (g_te or [])
    try:
        names = sorted(set(values))
    except TypeError as exc:
        raise DataError(f"group column '{key}' of '{raw}' must hold sortable ids (ints or strings): {exc}") from exc
    index = {n: i for i, n in enumerate(names)}
    return (
        np.array([index[v] for v in g_tr], np.int64),
        None if g_te is None else np.array([index[v] for v in g_te], np.int64),
    )


def _decode(kind: str, where: Path, cfg: DataConfig) -> tuple[dict[str, np.ndarray], dict]:
    raw = str(cfg.hf_path)
    with tempfile.TemporaryDirectory(prefix="fedsim-hf-") as tmp:
        dd = _open(kind, where, cfg, tmp)
        tr, te = dd[cfg.hf_split_train], dd[cfg.hf_split_test]
        if len(tr) == 0 or len(te) == 0:
            raise DataError(
                f"data.hf_path '{raw}': split '{cfg.hf_split_train if len(tr) == 0 else cfg.hf_split_test}' is empty"
            )
        text_mode = cfg.hf_text_key is not None
        meta: dict[str, Any] = {}
        if text_mode:
            key = str(cfg.hf_text_key)
            xs = []
            datasets = import_datasets()
            for ds, split in ((tr, cfg.hf_split_train), (te, cfg.hf_split_test)):
                feat = _column(ds, key, "hf_text_key", split, raw)
                if not (isinstance(feat, datasets.Value) and feat.dtype in ("string", "large_string")):
                    raise DataError(
                        f"config key 'data.hf_text_key' = {key!r}: column of split '{split}' holds {feat}, not strings"
                    )
                try:
                    xs.append(text.encode(list(ds[key]), what=f"split '{split}' of '{raw}', column '{key}'"))
                except (ValueError, TypeError) as exc:
                    raise DataError(str(exc)) from exc
            x_tr, x_te = xs
            if x_tr.shape[1] != x_te.shape[1]:
                raise DataError(
                    f"data.hf_text_key '{key}': train and test sequences differ in length "
                    f"({x_tr.shape[1]} vs {x_te.shape[1]})"
                )
        else:
            x_tr = _images(tr, cfg.hf_image_key, int(cfg.image_size), cfg.hf_split_train, raw)
            x_te = _images(te, cfg.hf_image_key, int(cfg.image_size), cfg.hf_split_test, raw)
            if x_tr.shape[2:] != x_te.shape[2:]:
                raise DataError(
                    f"data.hf_path '{raw}': train images are {x_tr.shape[2]}x{x_tr.shape[3]}, test images "
                    f"{x_te.shape[2]}x{x_te.shape[3]}; set data.image_size to resize both"
                )
            x_tr, x_te = unify_channels(x_tr, x_te)
            meta["mean"], meta["std"] = channel_stats(x_tr)
        y_tr, y_te, k = _labels(tr, te, cfg.hf_label_key, text_mode, raw)
        meta["num_classes"] = k
        arrays = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
        if cfg.hf_group_key is not None:
            g_tr, g_te = _groups(tr, te, str(cfg.hf_group_key), raw)
            arrays["groups"] = g_tr
            if g_te is not None:
                arrays["groups_test"] = g_te
        del dd, tr, te  # release the memory maps before the temporary folder goes
    return arrays, meta


def _params(cfg: DataConfig) -> dict[str, Any]:
    """The config values that change the decoded arrays."""
    return {
        k: getattr(cfg, k)
        for k in (
            "hf_split_train",
            "hf_split_test",
            "hf_image_key",
            "hf_text_key",
            "hf_label_key",
            "hf_group_key",
            "image_size",
        )
    }


def _root(cfg: DataConfig) -> Path:
    return Path(str(cfg.root)).expanduser().resolve()


@dataclass
class HFParams(DataConfig):
    """``data.*`` with ``hf``: the common keys and the Hugging Face dataset's own."""

    image_size: int = hp(0, ge=0, help="resize images to a square of this side (bilinear); 0 = as stored", source="-")
    hf_path: str | None = hp(
        None,
        help="a save_to_disk directory, a directory of data files (parquet, arrow, ...) or a Hub name in the local cache",
        source="required",
        text="a path or Hub name",
    )
    hf_split_train: str = hp("train", help="the split to train on", source="Hugging Face's usual split name")
    hf_split_test: str = hp("test", help="the split to test on", source="Hugging Face's usual split name")
    hf_image_key: str = hp(
        "image", help="the images' column (an Image feature or uint8 arrays)", source="datasets' convention"
    )
    hf_text_key: str | None = hp(
        None, help="strings instead of images (LEAF's 80-character alphabet)", source="null: images", text="a column"
    )
    hf_label_key: str = hp("label", help="the labels' column", source="datasets' convention")
    hf_group_key: str | None = hp(
        None, help="natural groups (writer, user) for partition.scheme natural", source="null: none", text="a column"
    )


def _check_hf(cfg: Any) -> str | None:
    if not cfg.data.hf_path:
        return (
            "data.dataset 'hf' needs data.hf_path: a directory written by save_to_disk, a directory "
            "of parquet/arrow files, or a Hub name in the local cache"
        )
    return None


@register(
    "hf",
    reads=("root", "download", "augment"),
    key=lambda cfg, seed, n: (str(cfg.hf_path), tuple(_params(cfg).items()), cfg.augment, cfg.download),
    text=lambda cfg: cfg.hf_text_key is not None,
    check=_check_hf,
    summary="a Hugging Face dataset (images or text), decoded once into tensors",
    paper="Hugging Face datasets (Lhoest et al. 2021); pip install 'fedsim[hf]'",
    Params=HFParams,
)
def load_hf(cfg: HFParams, seed: int, n_parties: int) -> DatasetBundle:
    """A Hugging Face dataset (``data.hf_*``), decoded once into tensors and cached."""
    kind, where = _source(cfg)
    if kind == "hub":
        # what identifies a Hub copy is the library's fingerprint of each split (cheap: memory-mapped)
        with tempfile.TemporaryDirectory(prefix="fedsim-hf-") as tmp:
            dd = _open(kind, where, cfg, tmp)
            sources: Any = {s: getattr(dd[s], "_fingerprint", None) for s in (cfg.hf_split_train, cfg.hf_split_test)}
            del dd
        beside = _root(cfg)
    else:
        sources = fingerprint(_source_files(where), where)
        beside = where
    name = "hf-" + re.sub(r"[^\w.-]+", "_", str(cfg.hf_path).strip("/"))[-60:]
    key = cache_key("hf", {**_params(cfg), "source": str(where)}, sources)
    arrays, meta = cached(beside, name, key, lambda: _decode(kind, where, cfg))
    text_mode = cfg.hf_text_key is not None
    augment = False if text_mode else bool(cfg.augment)
    return DatasetBundle.from_arrays(
        "hf",
        arrays,
        int(meta["num_classes"]),
        None if text_mode else tuple(meta["mean"]),
        None if text_mode else tuple(meta["std"]),
        augment,
    )


__all__ = ["load_hf", "import_datasets", "PIP_HINT"]
