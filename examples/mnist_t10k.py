"""Build torchvision's MNIST layout from the MNIST test set (t10k), for real-data checks.

The README's real-data results use the 10,000 MNIST test images only: the first
8,000 become the training set and the last 2,000 the test set, written as
``ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` so fedsim's ``mnist``
loader reads them like the full dataset::

    python examples/mnist_t10k.py --src path/to/mnist-t10k --root data/mnist-t10k
    fedsim sweep configs/sweeps/mnist-partitions.yaml --out runs/mnist-partitions
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

N_TRAIN = 8000


def read_idx(path: Path) -> np.ndarray:
    if path.suffix == ".gz":
        with gzip.open(path) as fh:
            raw = fh.read()
    else:
        raw = path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    code = 0x08  # unsigned byte
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def find(src: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (src / name).exists():
            return src / name
    raise SystemExit(f"{src} holds no {stem}[.gz]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--src",
        required=True,
        type=Path,
        help="folder with t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]",
    )
    ap.add_argument("--root", default=Path("data/mnist-t10k"), type=Path, help="data.root to create")
    args = ap.parse_args()
    images = read_idx(find(args.src, "t10k-images-idx3-ubyte"))
    labels = read_idx(find(args.src, "t10k-labels-idx1-ubyte"))
    raw = args.root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_idx(raw / "train-images-idx3-ubyte", images[:N_TRAIN])
    write_idx(raw / "train-labels-idx1-ubyte", labels[:N_TRAIN])
    write_idx(raw / "t10k-images-idx3-ubyte", images[N_TRAIN:])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[N_TRAIN:])
    print(f"wrote {raw}: {N_TRAIN} train and {len(labels) - N_TRAIN} test images")


if __name__ == "__main__":
    main()
