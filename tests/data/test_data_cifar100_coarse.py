"""CIFAR-100's 20 superclasses: coarse labels, and partitions by superclass."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import fedsim
import partitioners
from fedsim.config.load import load_config
from fedsim.data import clear_cache, load_dataset
from fedsim.errors import ConfigError, DataError
from fedsim.inputs.run_inputs import compute_dataidxs
from fedsim.schema.sections import DataConfig

N_TRAIN, N_TEST = 400, 40


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def fine_to_coarse() -> np.ndarray:
    """A fixed nesting of the 100 fine classes in 20 superclasses, 5 each (not CIFAR's own)."""
    return np.random.default_rng(7).permutation(np.repeat(np.arange(20), 5))


def write_cifar100(root, n_train=N_TRAIN, n_test=N_TEST):
    rng = np.random.default_rng(0)
    nest = fine_to_coarse()
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump(
                {b"data": data, b"fine_labels": fine.tolist(), b"coarse_labels": nest[fine].tolist()}, f, protocol=2
            )
        out[name] = (fine, nest[fine])
    return out


def test_fine_and_coarse_labels(tmp_path):
    exp = write_cifar100(tmp_path)
    fine = load_dataset(DataConfig(dataset="cifar100", root=str(tmp_path)), 0, 1)
    assert fine.num_classes == 100 and fine.y_train.tolist() == exp["train"][0].tolist()
    assert fine.superclasses.tolist() == exp["train"][1].tolist()
    coarse = load_dataset(DataConfig(dataset="cifar100", root=str(tmp_path), cifar100_labels="coarse"), 0, 1)
    assert coarse.num_classes == 20 and coarse.y_train.tolist() == exp["train"][1].tolist()
    assert coarse.y_test.tolist() == exp["test"][1].tolist()
    assert fedsim.data.input_spec(DataConfig(dataset="cifar100", cifar100_labels="coarse")) == ((3, 32, 32), 20)


def test_a_fine_class_in_two_superclasses_is_refused(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [3, 3], b"coarse_labels": [0, 1]}, f)
    with pytest.raises(DataError, match="a fine class has more than one coarse label"):
        load_dataset(DataConfig(dataset="cifar100", root=str(tmp_path)), 0, 1)


def test_each_party_sees_some_superclasses(tmp_path):
    write_cifar100(tmp_path)
    cfg = load_config(
        {
            "data": {"dataset": "cifar100", "root": str(tmp_path)},
            "partition": {"scheme": "label-quantity", "n_parties": 10, "classes_per_party": 2, "by": "superclass"},
            "seed": 4,
        }
    )
    bundle = load_dataset(cfg.data, 0, 10)
    dataidxs = compute_dataidxs(cfg, bundle)
    # the same split as label-quantity over the superclass ids themselves
    want = partitioners.partition(bundle.superclasses, "label-quantity", 10, seed=4, classes_per_party=2)
    assert all(np.array_equal(dataidxs[j], want[j]) for j in range(10))
    nest = fine_to_coarse()
    for idx in dataidxs.values():
        supers = set(bundle.superclasses[idx].tolist())
        assert len(supers) == 2  # two superclasses per party...
        # ...with all of their fine classes: every fine label of the party nests in them
        assert set(nest[bundle.y_train[idx].numpy()].tolist()) == supers
        assert len(set(bundle.y_train[idx].tolist())) > 2


def test_by_superclass_needs_superclasses_and_a_label_scheme(tmp_path):
    with pytest.raises(ConfigError, match="'partition.by' = 'superclass' changes only the label-skew schemes"):
        load_config({"partition": {"scheme": "iid", "by": "superclass"}})
    cfg = load_config({"partition": {"scheme": "dirichlet", "by": "superclass"}})
    with pytest.raises(ConfigError, match="needs a dataset with superclasses"):
        compute_dataidxs(cfg, load_dataset(cfg.data, 0, 10))
    with pytest.raises(ConfigError, match="'data.cifar100_labels' is read only with data.dataset cifar100"):
        load_config({"data": {"dataset": "mnist", "cifar100_labels": "coarse"}})
    with pytest.raises(ConfigError, match="'data.cifar100_labels' = 'super' is not allowed"):
        load_config({"data": {"dataset": "cifar100", "cifar100_labels": "super"}})
