"""The torchvision-layout loaders, on tiny files written here in the real on-disk formats."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from fedsim.data import clear_cache, load_dataset
from fedsim.data.torchvision_sets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    FMNIST_MEAN,
    MNIST_MEAN,
    MNIST_STD,
    SVHN_MEAN,
    read_idx,
    safe_load_pickle,
)
from fedsim.errors import DataError
from fedsim.schema.sections import DataConfig


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def cfg(name: str, root: Path, **kw) -> DataConfig:
    return DataConfig(dataset=name, root=str(root), **kw)


# ---------------------------------------------------------------- file writers


def write_cifar_batch(
    path: Path, data: np.ndarray, labels: list[int], label_key: bytes = b"labels", protocol: int = 2
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # like the originals: a dict with byte-string keys, the images as uint8 (N, 3072)
    entry = {b"batch_label": b"tiny batch", b"data": data, label_key: labels, b"filenames": [b"a.png"] * len(data)}
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=protocol)


def py2_cifar_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2 + numpy 1 wrote it (the format of the real CIFAR files).

    Hand-assembled protocol-2 opcodes: byte-string (py2 ``str``) keys and array data,
    ``numpy.core.multiarray._reconstruct``, and the ndarray/dtype ``__setstate__`` tuples.
    """

    def sbs(b: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(b)]) + b

    n, d = data.shape
    arr = (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        b"cnumpy\nndarray\n"
        b"K\x00\x85" + sbs(b"b") + b"\x87R"
        b"(K\x01J" + struct.pack("<i", n) + b"J" + struct.pack("<i", d) + b"\x86"
        b"cnumpy\ndtype\n" + sbs(b"u1") + b"K\x00K\x01\x87R"
        b"(K\x03" + sbs(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        b"\x89T" + struct.pack("<i", data.nbytes) + data.tobytes() + b"tb"
    )
    lab = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(" + sbs(b"data") + arr + sbs(b"labels") + lab + b"u."


def make_cifar10(root: Path, per_batch: int = 3, n_test: int = 4, seed: int = 0, protocol: int = 2):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        write_cifar_batch(folder / f"data_batch_{i}", x, y, protocol=protocol)
        xs.append(x), ys.extend(y)
    xt = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    yt = rng.integers(0, 10, n_test).tolist()
    write_cifar_batch(folder / "test_batch", xt, yt, protocol=protocol)
    return np.concatenate(xs), ys, xt, yt


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def make_mnist(root: Path, folder: str, gz: bool, n_train: int = 5, n_test: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x, gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y, gz)
        out[prefix] = (x, y)
    return out


def make_svhn(root: Path, n_train: int = 6, n_test: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # MATLAB layout (H, W, C, N)
        y = np.arange(n).reshape(n, 1) % 10 + 1  # 1..10, where 10 is the digit 0
        scipy.io.savemat(str(root / f"{split}_32x32.mat"), {"X": x, "y": y.astype(np.uint8)})
        out[split] = (x, y)
    return out


# ---------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_reads_back_exactly(tmp_path, protocol):
    x, y, xt, yt = make_cifar10(tmp_path, protocol=protocol)
    b = load_dataset(cfg("cifar10", tmp_path), seed=0, n_parties=2)
    assert b.name == "cifar10" and b.num_classes == 10 and b.is_image
    assert b.x_train.dtype == torch.uint8 and b.x_train.shape == (15, 3, 32, 32)
    assert b.x_test.shape == (4, 3, 32, 32) and b.input_shape == (3, 32, 32)
    assert b.y_train.dtype == torch.int64 and b.y_train.tolist() == y and b.y_test.tolist() == yt
    # each row is the R plane, then G, then B, each row-major 32 x 32
    assert torch.equal(b.x_train, torch.from_numpy(x.reshape(-1, 3, 32, 32)))
    assert torch.equal(b.x_test, torch.from_numpy(xt.reshape(-1, 3, 32, 32)))
    n, c, h, w = 7, 2, 5, 31
    assert b.x_train[n, c, h, w].item() == x[n, c * 1024 + h * 32 + w]
    assert b.mean == CIFAR10_MEAN and b.std == CIFAR10_STD
    assert b.augment is True and b.groups is None


def test_cifar10_reads_python2_pickles_like_the_originals(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x, y = rng.integers(0, 256, (2, 3072), dtype=np.uint8), rng.integers(0, 10, 2).tolist()
        (folder / name).write_bytes(py2_cifar_pickle(x, y))
        batches[name] = (x, y)
    b = load_dataset(cfg("cifar10", tmp_path), 0, 1)
    assert torch.equal(b.x_train[8:10], torch.from_numpy(batches["data_batch_5"][0]).view(2, 3, 32, 32))
    assert b.y_test.tolist() == batches["test_batch"][1]


def test_cifar100_reads_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    x, xt = rng.integers(0, 256, (5, 3072), dtype=np.uint8), rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    y, yt = [0, 99, 42, 7, 63], [98, 1]
    for name, data, labels in (("train", x, y), ("test", xt, yt)):
        folder.mkdir(exist_ok=True)
        with open(folder / name, "wb") as f:  # coarse labels present too, as in the original
            pickle.dump({b"data": data, b"fine_labels": labels, b"coarse_labels": [0] * len(labels)}, f, protocol=2)
    b = load_dataset(cfg("cifar100", tmp_path), 0, 1)
    assert b.num_classes == 100 and b.y_train.tolist() == y and b.y_test.tolist() == yt
    assert torch.equal(b.x_train, torch.from_numpy(x).view(5, 3, 32, 32))
    assert b.mean == CIFAR100_MEAN and b.augment is True


def test_cifar_augment_can_be_switched_off(tmp_path):
    make_cifar10(tmp_path)
    assert load_dataset(cfg("cifar10", tmp_path, augment=False), 0, 1).augment is False


class _Evil:
    def __init__(self, marker: Path, how: str):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch '{self.marker}'",)
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("how", ["system", "eval"])
def test_cifar_pickle_with_a_disallowed_global_is_refused(tmp_path, how):
    make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    with open(bad, "wb") as f:
        pickle.dump({b"data": _Evil(marker, how), b"labels": [0]}, f)
    with pytest.raises(DataError) as err:
        load_dataset(cfg("cifar10", tmp_path), 0, 1)
    msg = str(err.value)
    assert str(bad) in msg and "not allowed" in msg and "\n" not in msg
    assert not marker.exists(), "the pickle's payload ran"


def test_restricted_unpickler_refuses_arbitrary_classes(tmp_path):
    p = tmp_path / "obj.pkl"
    p.write_bytes(pickle.dumps({b"data": Path("x")}))  # pathlib.PosixPath: harmless, but not allowed
    with pytest.raises(DataError, match="not allowed"):
        safe_load_pickle(p)
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps({"a": [1, 2.5, (3,)], "b": np.arange(6, dtype=np.int16).reshape(2, 3)}, protocol=5))
    back = safe_load_pickle(ok)
    assert back["a"] == [1, 2.5, (3,)] and back["b"].dtype == np.int16 and back["b"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_cifar_truncated_pickle_names_the_file(tmp_path):
    make_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(DataError, match="test_batch.*(corrupt|truncated)"):
        load_dataset(cfg("cifar10", tmp_path), 0, 1)


def test_cifar_wrong_content_names_the_file(tmp_path):
    make_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    write_cifar_batch(bad, np.zeros((3, 100), dtype=np.uint8), [0, 1, 2])
    with pytest.raises(DataError, match="data_batch_2.*uint8 \\(N, 3072\\)"):
        load_dataset(cfg("cifar10", tmp_path), 0, 1)
    write_cifar_batch(bad, np.zeros((3, 3072), dtype=np.uint8), [0, 1, 10])
    with pytest.raises(DataError, match="data_batch_2.*labels outside"):
        load_dataset(cfg("cifar10", tmp_path), 0, 1)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fmnist", "svhn"])
def test_absent_files_without_download_is_one_line_naming_the_path(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_dataset(cfg(name, root), 0, 1)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(root.resolve()) in msg
    assert "data.download: true" in msg and "data.root" in msg


def test_partly_absent_cifar_names_the_missing_file(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4 is missing"):
        load_dataset(cfg("cifar10", tmp_path), 0, 1)


def test_download_true_fetches_with_torchvision_then_reads_the_files(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeCIFAR10:  # stands in for the network: writes the files torchvision would
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            if not (Path(root) / "cifar-10-batches-py" / "test_batch").exists():
                make_cifar10(Path(root), seed=5)

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    b = load_dataset(cfg("cifar10", tmp_path, download=True), 0, 1)
    assert calls == [(str(tmp_path.resolve()), True, True), (str(tmp_path.resolve()), False, True)]
    x, y, _, _ = make_cifar10(tmp_path / "again", seed=5)
    assert torch.equal(b.x_train, torch.from_numpy(x).view(-1, 3, 32, 32)) and b.y_train.tolist() == y


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def broken(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got 404")

    monkeypatch.setattr(tvd, "MNIST", broken)
    with pytest.raises(DataError) as err:
        load_dataset(cfg("mnist", tmp_path, download=True), 0, 1)
    assert "download" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name,folder,mean", [("mnist", "MNIST", MNIST_MEAN), ("fmnist", "FashionMNIST", FMNIST_MEAN)])
def test_mnist_like_reads_back_exactly(tmp_path, gz, name, folder, mean):
    files = make_mnist(tmp_path, folder, gz)
    b = load_dataset(cfg(name, tmp_path), 0, 1)
    (x, y), (xt, yt) = files["train"], files["t10k"]
    assert b.x_train.dtype == torch.uint8 and b.x_train.shape == (5, 1, 28, 28) and b.x_test.shape == (3, 1, 28, 28)
    assert torch.equal(b.x_train[:, 0], torch.from_numpy(x)) and torch.equal(b.x_test[:, 0], torch.from_numpy(xt))
    assert b.y_train.dtype == torch.int64 and b.y_train.tolist() == y.tolist() and b.y_test.tolist() == yt.tolist()
    assert b.mean == mean and b.num_classes == 10 and b.augment is False and b.input_shape == (1, 28, 28)


def test_mnist_stats_and_augment_override(tmp_path):
    make_mnist(tmp_path, "MNIST", gz=False)
    b = load_dataset(cfg("mnist", tmp_path, augment=True), 0, 1)
    assert b.std == MNIST_STD and b.augment is True


def test_idx_header_is_checked(tmp_path):
    p = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    make_mnist(tmp_path, "MNIST", gz=False)
    p.write_bytes(p.read_bytes()[:-10])  # truncated
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        load_dataset(cfg("mnist", tmp_path), 0, 1)
    p.write_bytes(b"\x12\x34\x08\x03" + bytes(20))
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(p)


def test_corrupt_gz_names_the_file(tmp_path):
    make_mnist(tmp_path, "MNIST", gz=True)
    p = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:15])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*(corrupt|truncated)"):
        load_dataset(cfg("mnist", tmp_path), 0, 1)


def test_mnist_image_and_label_counts_must_agree(tmp_path):
    make_mnist(tmp_path, "MNIST", gz=False)
    write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.zeros(4, np.uint8), gz=False)
    with pytest.raises(DataError, match="5 images but 4 labels"):
        load_dataset(cfg("mnist", tmp_path), 0, 1)


# ----------------------------------------------------------------------- SVHN


def test_svhn_reads_back_exactly_and_maps_label_10_to_0(tmp_path):
    files = make_svhn(tmp_path)
    b = load_dataset(cfg("svhn", tmp_path), 0, 1)
    x, y = files["train"]
    assert b.x_train.dtype == torch.uint8 and b.x_train.shape == (6, 3, 32, 32) and b.x_test.shape == (4, 3, 32, 32)
    assert b.x_train.is_contiguous()
    n, c, h, w = 4, 1, 3, 17
    assert b.x_train[n, c, h, w].item() == x[h, w, c, n]
    assert torch.equal(b.x_train, torch.from_numpy(x).permute(3, 2, 0, 1))
    assert b.y_train.tolist() == [1, 2, 3, 4, 5, 6] and b.y_test.tolist() == [1, 2, 3, 4]
    assert b.mean == SVHN_MEAN and b.augment is False

    y10 = np.full((3, 1), 10, np.uint8)
    scipy.io.savemat(str(tmp_path / "test_32x32.mat"), {"X": x[..., :3], "y": y10})
    clear_cache()
    assert load_dataset(cfg("svhn", tmp_path), 0, 1).y_test.tolist() == [0, 0, 0]


def test_svhn_corrupt_mat_names_the_file(tmp_path):
    make_svhn(tmp_path)
    p = tmp_path / "train_32x32.mat"
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(DataError, match="train_32x32.mat"):
        load_dataset(cfg("svhn", tmp_path), 0, 1)


# ---------------------------------------------------------------------- cache


def test_file_datasets_are_cached_independently_of_seed(tmp_path):
    make_cifar10(tmp_path)
    a = load_dataset(cfg("cifar10", tmp_path), 0, 4)
    assert load_dataset(cfg("cifar10", tmp_path), 1, 10) is a  # files do not depend on seed or parties
    assert load_dataset(cfg("cifar10", tmp_path, augment=False), 0, 4) is not a
