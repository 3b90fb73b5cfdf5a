"""The MNIST test set (t10k) in the formats of real federated data, for by-hand checks.

The same 8,000 / 2,000 split as ``examples/mnist_t10k.py`` (first 8,000 images train,
last 2,000 test), in the same order, with a made-up ``writer`` column: 100 writers,
writer k holding training images 80k..80k+79 and test images 20k..20k+19 (contiguous
blocks, so LEAF's user-by-user layout keeps the original order and every path has the
same labels in the same order: the same seed gives the same split on every path)::

    python examples/mnist_t10k_formats.py write --src path/to/mnist-t10k --out data/mnist-t10k-formats
    # data/mnist-t10k-formats/hf-disk     DatasetDict.save_to_disk (image, label, writer)
    # data/mnist-t10k-formats/hf-parquet  train.parquet, test.parquet
    # data/mnist-t10k-formats/leaf        LEAF FEMNIST JSON: train/*.json, test/*.json
    python examples/mnist_t10k_formats.py write --src ... --out ... --big 100000
    # also hf-big: 100,000 training images (the 8,000 cycled) for the cache's load time

    python examples/mnist_t10k_formats.py write --src ... --out ... --tiny 100000
    # also tiny: Tiny-ImageNet's folder layout (train/<class>/images/*.JPEG, val/images/ with
    # val_annotations.txt) of 100,000 64x64 RGB JPEGs (the digits cycled, resized, tinted)

    python examples/mnist_t10k_formats.py time data.dataset=hf data.hf_path=data/mnist-t10k-formats/hf-big
    # first load (decodes, writes the cache) and second load (reads it), each in a new process

Needs the hf extra (``pip install -e ".[hf]"``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_t10k import N_TRAIN, find, read_idx  # noqa: E402

WRITERS = 100


def writers(n: int) -> list[str]:
    """Contiguous blocks: sample i of n belongs to writer i // (n / WRITERS)."""
    per = n // WRITERS
    return [f"w{min(i // per, WRITERS - 1):03d}" for i in range(n)]


def hf_dict(images: np.ndarray, labels: np.ndarray, n_train: int | None = None):
    import datasets
    from PIL import Image

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=[str(d) for d in range(10)]),
            "writer": datasets.Value("string"),
        }
    )

    def split(x: np.ndarray, y: np.ndarray) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"image": [Image.fromarray(a) for a in x], "label": y.tolist(), "writer": writers(len(y))},
            features=features,
        )

    x_tr, y_tr = images[:N_TRAIN], labels[:N_TRAIN]
    if n_train is not None:  # cycle the training images up to n_train
        take = np.arange(n_train) % N_TRAIN
        x_tr, y_tr = x_tr[take], y_tr[take]
    return datasets.DatasetDict({"train": split(x_tr, y_tr), "test": split(images[N_TRAIN:], labels[N_TRAIN:])})


def write_leaf(out: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """LEAF FEMNIST layout: {"users", "num_samples", "user_data": {user: {"x": 784 floats, "y"}}}."""
    for split, x, y in (("train", images[:N_TRAIN], labels[:N_TRAIN]), ("test", images[N_TRAIN:], labels[N_TRAIN:])):
        w = np.array(writers(len(y)))
        users = sorted(set(w.tolist()))
        doc = {"users": users, "num_samples": [], "user_data": {}}
        for u in users:
            idx = np.flatnonzero(w == u)
            doc["num_samples"].append(int(idx.size))
            doc["user_data"][u] = {"x": (x[idx].reshape(len(idx), -1) / 255.0).round(6).tolist(), "y": y[idx].tolist()}
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / split / f"mnist_t10k_{split}.json").write_text(json.dumps(doc))


def write_tiny(out: Path, images: np.ndarray, labels: np.ndarray, n_train: int) -> None:
    """Tiny-ImageNet's layout: n_train training JPEGs in train/<class>/images/, the 2,000
    test images in val/images/ with val_annotations.txt; 64x64 RGB, one tint per image."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    classes = [f"n{d:08d}" for d in range(10)]
    tints = np.random.default_rng(0).uniform(0.3, 1.0, (len(images), 3))

    def save(args: tuple[int, int, Path]) -> None:
        i, src, path = args
        rgb = (images[src][..., None] * tints[src]).astype(np.uint8)
        Image.fromarray(rgb).resize((64, 64), Image.Resampling.BILINEAR).save(path, quality=90)

    jobs = []
    for c in classes:
        (out / "train" / c / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        src = i % N_TRAIN
        jobs.append((i, src, out / "train" / classes[labels[src]] / "images" / f"{classes[labels[src]]}_{i}.JPEG"))
    (out / "val" / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, src in enumerate(range(N_TRAIN, len(labels))):
        jobs.append((k, src, out / "val" / "images" / f"val_{k}.JPEG"))
        lines.append(f"val_{k}.JPEG\t{classes[labels[src]]}\t0\t0\t63\t63")
    (out / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    with ThreadPoolExecutor() as pool:
        list(pool.map(save, jobs, chunksize=512))


def cmd_write(args: argparse.Namespace) -> None:
    images = read_idx(find(args.src, "t10k-images-idx3-ubyte"))
    labels = read_idx(find(args.src, "t10k-labels-idx1-ubyte")).astype(np.int64)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    dd = hf_dict(images, labels)
    dd.save_to_disk(str(out / "hf-disk"))
    (out / "hf-parquet").mkdir(exist_ok=True)
    for split, ds in dd.items():
        ds.to_parquet(str(out / "hf-parquet" / f"{split}.parquet"))
    write_leaf(out / "leaf", images, labels)
    print(
        f"wrote {out}/hf-disk, {out}/hf-parquet, {out}/leaf: {N_TRAIN} train, {len(labels) - N_TRAIN} test, "
        f"{WRITERS} writers"
    )
    if args.big:
        hf_dict(images, labels, n_train=args.big).save_to_disk(str(out / "hf-big"))
        print(f"wrote {out}/hf-big: {args.big} train images")
    if args.tiny:
        write_tiny(out / "tiny", images, labels, args.tiny)
        print(f"wrote {out}/tiny: {args.tiny} train images in Tiny-ImageNet's layout")


_LOAD = """
import sys, time
from fedsim.config.load import load_config
from fedsim.data import load_dataset
cfg = load_config({}, sys.argv[1:])
t = time.perf_counter()
b = load_dataset(cfg.data, cfg.data.seed, cfg.partition.n_parties)
t1 = time.perf_counter()
b.x_train.clone()  # every pixel read once (a cached load maps the file: pages come in on first touch)
t2 = time.perf_counter()
print(f"load {t1 - t:.2f} s, + reading every image once {t2 - t1:.2f} s: {len(b.y_train)} train {tuple(b.x_train.shape[1:])}")
"""


def cmd_time(args: argparse.Namespace) -> None:
    from fedsim.config.load import load_config

    cfg = load_config({}, args.overrides)
    where = Path(cfg.data.hf_path if cfg.data.dataset == "hf" else cfg.data.root)
    cache = (where if where.is_dir() else Path(cfg.data.root)) / ".fedsim-cache"
    if cache.exists():
        shutil.rmtree(cache)  # the first load below decodes
    for what in ("first load (decode + write cache)", "second load (read cache)  "):
        out = subprocess.run([sys.executable, "-c", _LOAD, *args.overrides], capture_output=True, text=True, check=True)
        print(f"{what}: {out.stdout.strip()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write the formats")
    w.add_argument(
        "--src", required=True, type=Path, help="folder with t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"
    )
    w.add_argument("--out", default=Path("data/mnist-t10k-formats"), type=Path)
    w.add_argument("--big", type=int, default=0, help="also write hf-big with this many training images")
    w.add_argument("--tiny", type=int, default=0, help="also write tiny/ (Tiny-ImageNet layout) with this many")
    t = sub.add_parser("time", help="time a first and a second load of a data config")
    t.add_argument("overrides", nargs="+", help="data.* overrides, e.g. data.dataset=hf data.hf_path=...")
    args = ap.parse_args()
    {"write": cmd_write, "time": cmd_time}[args.cmd](args)


if __name__ == "__main__":
    main()
