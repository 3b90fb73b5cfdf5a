"""dataidxs.npz: roundtrip, metadata, checks against the current labels, bad files."""

from __future__ import annotations

import os

import numpy as np
import pytest

import partitioners
from partitioners import PartitionFileError


@pytest.fixture()
def labels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 10, 2000)


def test_roundtrip_and_meta(tmp_path, labels):
    d = partitioners.partition(labels, "dirichlet", 13, seed=7, beta=0.3)
    path = tmp_path / "dataidxs.npz"
    partitioners.save_dataidxs(path, d, labels, "dirichlet", {"beta": 0.3, "min_size": 10}, 7)
    back = partitioners.load_dataidxs(path, labels)
    assert list(back) == list(range(13))
    assert all(back[j].dtype == np.int64 and np.array_equal(back[j], d[j]) for j in d)
    meta = partitioners.read_dataidxs_meta(path)
    assert meta["scheme"] == "dirichlet" and meta["params"] == {"beta": 0.3, "min_size": 10}
    assert meta["seed"] == 7 and meta["n_samples"] == 2000 and meta["n_parties"] == 13
    assert len(meta["labels_sha256"]) == 64 and meta["version"] == 1
    assert os.listdir(tmp_path) == ["dataidxs.npz"], "no temporary file left behind"
    with np.load(path, allow_pickle=False) as z:
        assert z["offsets"].shape == (14,) and z["indices"].dtype == np.int64


def test_many_parties_and_empty_ones(tmp_path, labels):
    d = {j: np.array([j], dtype=np.int64) if j < 2000 else np.array([], dtype=np.int64) for j in range(10_000)}
    path = tmp_path / "p.npz"
    partitioners.save_dataidxs(path, d, labels, "custom", {}, 0)
    back = partitioners.load_dataidxs(path, labels)
    assert len(back) == 10_000 and back[5][0] == 5 and back[9999].size == 0


def test_array_params_are_summarised(tmp_path, labels):
    groups = np.arange(2000) % 50
    d = partitioners.partition(labels, "natural", 10, groups=groups)
    path = tmp_path / "n.npz"
    partitioners.save_dataidxs(path, d, labels, "natural", {"groups": groups, "x": np.float32(0.5)}, 0)
    params = partitioners.read_dataidxs_meta(path)["params"]
    assert params["groups"]["note"] == "array not stored" and params["groups"]["shape"] == [2000]
    assert len(params["groups"]["sha256"]) == 64 and params["x"] == 0.5


def test_other_labels_are_refused(tmp_path, labels):
    d = partitioners.partition(labels, "iid", 4)
    path = tmp_path / "dataidxs.npz"
    partitioners.save_dataidxs(path, d, labels, "iid", {}, 0)
    with pytest.raises(PartitionFileError, match="2000 samples.*1999 samples") as e:
        partitioners.load_dataidxs(path, labels[:-1])
    assert "\n" not in str(e.value) and "delete" in str(e.value)
    with pytest.raises(PartitionFileError, match="different labels"):
        partitioners.load_dataidxs(path, np.random.default_rng(1).permutation(labels))
    changed = labels.copy()
    changed[0] = (changed[0] + 1) % 10
    with pytest.raises(PartitionFileError, match="different labels"):
        partitioners.load_dataidxs(path, changed)
    assert issubclass(PartitionFileError, ValueError)


def test_missing_and_corrupt_files(tmp_path, labels):
    with pytest.raises(PartitionFileError, match="nope.npz"):
        partitioners.load_dataidxs(tmp_path / "nope.npz", labels)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file at all")
    with pytest.raises(PartitionFileError, match="bad.npz"):
        partitioners.load_dataidxs(bad, labels)
    with pytest.raises(PartitionFileError, match="bad.npz"):
        partitioners.read_dataidxs_meta(bad)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.arange(3))
    with pytest.raises(PartitionFileError, match="not a partition file"):
        partitioners.load_dataidxs(other, labels)
    # a truncated real file
    good = tmp_path / "good.npz"
    partitioners.save_dataidxs(good, partitioners.partition(labels, "iid", 3), labels, "iid", {}, 0)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(PartitionFileError, match="good.npz"):
        partitioners.load_dataidxs(good, labels)


def test_save_rejects_bad_dataidxs(tmp_path, labels):
    with pytest.raises(ValueError, match="0..1"):
        partitioners.save_dataidxs(tmp_path / "x.npz", {0: [1], 2: [3]}, labels, "iid", {}, 0)
    with pytest.raises(ValueError, match="outside"):
        partitioners.save_dataidxs(tmp_path / "x.npz", {0: [5000]}, labels, "iid", {}, 0)
    assert not list(tmp_path.iterdir())
