"""Hugging Face datasets (the hf extra): save_to_disk, parquet files, the local Hub cache,
images and text, groups, the decoded cache, errors, runs."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets", reason="the hf extra is not installed (pip install 'fedsim[hf]')")

from data_writers import bomb_png, png_images, shakespeare_text  # noqa: E402

import fedsim  # noqa: E402
from fedsim.data import clear_cache, hf, load_dataset  # noqa: E402
from fedsim.data.cache import CACHE_DIR  # noqa: E402
from fedsim.data.text import ALPHABET  # noqa: E402
from fedsim.errors import DataError  # noqa: E402
from fedsim.schema.sections import DataConfig  # noqa: E402

SIZES = {"train": 24, "test": 10}
CLASSES = ["zero", "one", "two"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def image_split(split: str, rgb: bool = False) -> tuple[datasets.Dataset, np.ndarray, list[int], list[str]]:
    from PIL import Image

    n = SIZES[split]
    arr = png_images(n, 1 if split == "train" else 2, (12, 12, 3 if rgb else 1))
    labels = [(i * 5) % 3 for i in range(n)]
    writers = [f"w{(i * 3) % 5}" for i in range(n)] if split == "train" else [f"w{i % 4}" for i in range(n)]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES), "writer": datasets.Value("string")}
    )
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a) for a in arr], "label": labels, "writer": writers}, features=features
    )
    return ds, arr, labels, writers


@pytest.fixture()
def image_dict():
    parts = {s: image_split(s) for s in SIZES}
    return datasets.DatasetDict({s: p[0] for s, p in parts.items()}), parts


def load(**kw):
    return load_dataset(DataConfig(dataset="hf", **kw), 0, 1)


def check_images(b, parts):
    _, arr_tr, y_tr, w_tr = parts["train"]
    _, arr_te, y_te, w_te = parts["test"]
    assert b.x_train.dtype == torch.uint8 and tuple(b.x_train.shape) == (24, 1, 12, 12)
    assert torch.equal(b.x_train[:, 0], torch.from_numpy(arr_tr)) and torch.equal(
        b.x_test[:, 0], torch.from_numpy(arr_te)
    )
    assert b.y_train.tolist() == y_tr and b.y_test.tolist() == y_te and b.num_classes == 3
    names = sorted(set(w_tr) | set(w_te))  # w0..w4
    assert b.groups.tolist() == [names.index(w) for w in w_tr]
    assert b.groups_test.tolist() == [names.index(w) for w in w_te]
    px = arr_tr.astype(np.float64) / 255
    assert b.mean[0] == pytest.approx(px.mean(), abs=1e-6) and b.std[0] == pytest.approx(px.std(), abs=1e-6)


def test_save_to_disk(tmp_path, image_dict):
    dd, parts = image_dict
    dd.save_to_disk(str(tmp_path / "ds"))
    check_images(load(hf_path=str(tmp_path / "ds"), hf_group_key="writer"), parts)


def test_parquet_files_give_the_same_tensors(tmp_path, image_dict):
    dd, parts = image_dict
    (tmp_path / "pq").mkdir()
    for split, ds in dd.items():
        ds.to_parquet(str(tmp_path / "pq" / f"{split}.parquet"))
    b = load(hf_path=str(tmp_path / "pq"), hf_group_key="writer")
    check_images(b, parts)
    # nothing but the decoded cache was written beside the files
    assert sorted(os.listdir(tmp_path / "pq")) == [CACHE_DIR, "test.parquet", "train.parquet"]


def test_second_load_reads_the_cache_without_the_library(tmp_path, image_dict, monkeypatch):
    dd, parts = image_dict
    dd.save_to_disk(str(tmp_path / "ds"))
    first = load(hf_path=str(tmp_path / "ds"), hf_group_key="writer")
    clear_cache()
    decode = hf._decode
    monkeypatch.setattr(hf, "_decode", lambda *a: pytest.fail("decoded again despite the cache"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # a cache hit needs no datasets import
    second = load(hf_path=str(tmp_path / "ds"), hf_group_key="writer")
    assert torch.equal(first.x_train, second.x_train) and np.array_equal(first.groups, second.groups)
    clear_cache()
    monkeypatch.setattr(hf, "_decode", decode)
    with pytest.raises(DataError, match=r"pip install 'fedsim\[hf\]'"):  # another config: must decode
        load(hf_path=str(tmp_path / "ds"), image_size=8)


def test_image_size_and_rgb(tmp_path):
    parts = {s: image_split(s, rgb=True) for s in SIZES}
    datasets.DatasetDict({s: p[0] for s, p in parts.items()}).save_to_disk(str(tmp_path / "ds"))
    b = load(hf_path=str(tmp_path / "ds"))
    assert tuple(b.x_train.shape) == (24, 3, 12, 12) and len(b.mean) == 3 and b.groups is None
    assert torch.equal(b.x_train[5], torch.from_numpy(parts["train"][1][5].transpose(2, 0, 1)))
    clear_cache()
    small = load(hf_path=str(tmp_path / "ds"), image_size=6)
    assert tuple(small.x_train.shape) == (24, 3, 6, 6) and tuple(small.x_test.shape) == (10, 3, 6, 6)


def test_local_hub_cache_is_used_offline(tmp_path, image_dict, monkeypatch):
    dd, parts = image_dict
    (tmp_path / "pq").mkdir()
    for split, ds in dd.items():
        ds.to_parquet(str(tmp_path / "pq" / f"{split}.parquet"))
    # a prepared copy laid out as load_dataset("fedsim-test/tiny") leaves it in the cache
    cache = tmp_path / "hf-cache"
    datasets.load_dataset(str(tmp_path / "pq"), cache_dir=str(tmp_path / "prep"))
    built = next((tmp_path / "prep").glob("*/*/*/*/dataset_info.json")).parent
    entry = cache / "fedsim-test___tiny" / "default" / "0.0.0" / "h"
    entry.mkdir(parents=True)
    for split in SIZES:
        shutil.copy(next(built.glob(f"*-{split}.arrow")), entry / f"tiny-{split}.arrow")
    info = json.loads((built / "dataset_info.json").read_text())
    (entry / "dataset_info.json").write_text(json.dumps({**info, "config_name": "default", "dataset_name": "tiny"}))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    b = load(hf_path="fedsim-test/tiny", hf_group_key="writer", root=str(tmp_path / "root"))
    check_images(b, parts)
    assert (tmp_path / "root" / CACHE_DIR).is_dir()  # a Hub copy's decoded cache goes under data.root
    with pytest.raises(
        DataError,
        match="neither a local directory nor a Hub dataset in the local Hugging Face cache.*set data.download: true",
    ):
        load(hf_path="fedsim-test/absent", root=str(tmp_path / "root"))


def text_dict() -> tuple[datasets.DatasetDict, dict]:
    out, exp = {}, {}
    for split, n in (("train", 18), ("test", 6)):
        x, y = shakespeare_text(3 if split == "train" else 4, n, 16)
        roles = [f"role{i % 3}" for i in range(n)]
        out[split] = datasets.Dataset.from_dict({"x": x, "y": y, "character_id": roles})
        exp[split] = (x, y, roles)
    return datasets.DatasetDict(out), exp


def test_text_columns_become_tokens(tmp_path):
    dd, exp = text_dict()
    dd.save_to_disk(str(tmp_path / "ds"))
    b = load(hf_path=str(tmp_path / "ds"), hf_text_key="x", hf_label_key="y", hf_group_key="character_id")
    x, y, roles = exp["train"]
    assert b.is_text and tuple(b.x_train.shape) == (18, 16) and b.num_classes == 80
    assert b.x_train[2].tolist() == [ALPHABET.index(c) for c in x[2]]
    assert b.y_train.tolist() == [ALPHABET.index(c) for c in y] and b.mean is None
    assert b.groups.tolist() == [int(r[-1]) for r in roles]


def test_string_class_names_and_integer_labels(tmp_path):
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"x": ["ab", "cd", "ef"], "y": ["dog", "cat", "dog"], "k": [0, 4, 2]}),
            "test": datasets.Dataset.from_dict({"x": ["gh"], "y": ["emu"], "k": [1]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "ds"))
    b = load(hf_path=str(tmp_path / "ds"), hf_text_key="x", hf_label_key="y")
    assert b.y_train.tolist() == [1, 0, 1] and b.y_test.tolist() == [2] and b.num_classes == 3  # cat, dog, emu
    clear_cache()
    b = load(hf_path=str(tmp_path / "ds"), hf_text_key="x", hf_label_key="k")
    assert b.y_train.tolist() == [0, 4, 2] and b.num_classes == 5


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (
            {"hf_label_key": "class"},
            "'data.hf_label_key' = 'class' is not a column of split 'train' .*columns: image, label, writer",
        ),
        ({"hf_image_key": "img"}, "'data.hf_image_key' = 'img' is not a column"),
        ({"hf_group_key": "user"}, "'data.hf_group_key' = 'user' is not a column"),
        ({"hf_split_test": "validation"}, "'data.hf_split_test' = 'validation' is not a split .*splits: train, test"),
        ({"hf_text_key": "label"}, "'data.hf_text_key' = 'label': column of split 'train' holds ClassLabel"),
    ],
)
def test_bad_keys_name_what_exists(tmp_path, image_dict, kw, fragment):
    dd, _ = image_dict
    dd.save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError, match=fragment) as info:
        load(hf_path=str(tmp_path / "ds"), **kw)
    assert "\n" not in str(info.value)


def test_missing_paths_and_single_datasets(tmp_path, image_dict):
    with pytest.raises(DataError, match="does not exist"):
        load(hf_path=str(tmp_path / "no" / "such" / "dir"))
    dd, _ = image_dict
    dd["train"].save_to_disk(str(tmp_path / "one"))
    with pytest.raises(DataError, match="single Dataset without splits"):
        load(hf_path=str(tmp_path / "one"))
    dd["train"].to_parquet(str(tmp_path / "x.parquet"))
    with pytest.raises(DataError, match="is a file"):
        load(hf_path=str(tmp_path / "x.parquet"))


def _run_cfg(tiny, data, model, n_parties=3, scheme="natural"):
    cfg = tiny(
        model={"name": model},
        partition={"scheme": scheme, "n_parties": n_parties, "min_size": 2},
        train={"epochs": 1, "batch_size": 8, "lr": 0.05},
    )
    cfg["data"] = {"dataset": "hf", **data}
    return cfg


def test_two_rounds_on_images_with_writers_as_parties(tmp_path, tiny, image_dict):
    dd, _ = image_dict
    dd.save_to_disk(str(tmp_path / "ds"))
    r = fedsim.run(
        _run_cfg(tiny, {"hf_path": str(tmp_path / "ds"), "hf_group_key": "writer", "image_size": 16}, "simple-cnn", 5),
        out=tmp_path / "run",
    )
    assert r.summary["status"] == "finished" and r.summary["rounds"] == 2
    assert r.summary["test_accuracy"] * 10 == pytest.approx(round(r.summary["test_accuracy"] * 10))
    counts = np.array(json.loads((r.run_dir / "partition.json").read_text())["class_counts"])
    assert sorted(counts.sum(axis=1).tolist()) == [4, 5, 5, 5, 5]  # five writers, one per party


def test_two_rounds_on_text(tmp_path, tiny):
    dd, _ = text_dict()
    (tmp_path / "pq").mkdir()
    for split, ds in dd.items():
        ds.to_parquet(str(tmp_path / "pq" / f"{split}.parquet"))
    data = {"hf_path": str(tmp_path / "pq"), "hf_text_key": "x", "hf_label_key": "y", "hf_group_key": "character_id"}
    r = fedsim.run(_run_cfg(tiny, data, "char-lstm"), out=tmp_path / "run")
    assert r.summary["status"] == "finished" and r.summary["rounds"] == 2
    assert r.summary["test_accuracy"] * 6 == pytest.approx(round(r.summary["test_accuracy"] * 6))


def test_scheme_flwr_reproduces_flwr_datasets_on_the_hf_dataset(tmp_path, image_dict):
    fp = pytest.importorskip("flwr_datasets.partitioner", reason="flwr-datasets is not installed")
    from fedsim.config.load import load_config
    from fedsim.inputs.run_inputs import compute_dataidxs, load_bundle

    dd, _ = image_dict
    dd.save_to_disk(str(tmp_path / "ds"))
    cfg = load_config(
        {
            "seed": 5,
            "data": {"dataset": "hf", "hf_path": str(tmp_path / "ds")},
            "partition": {
                "scheme": "flwr",
                "n_parties": 3,
                "flwr_partitioner": "DirichletPartitioner",
                "flwr_args": {"alpha": 1.0, "min_partition_size": 2},
            },
        }
    )
    ours = compute_dataidxs(cfg, load_bundle(cfg))
    # what a Flower app does with the same dataset and seed
    part = fp.DirichletPartitioner(num_partitions=3, partition_by="label", alpha=1.0, min_partition_size=2, seed=5)
    part.dataset = dd["train"].add_column("row", list(range(SIZES["train"])))
    for j in range(3):
        assert ours[j].tolist() == sorted(part.load_partition(j)["row"])


def test_a_decompression_bomb_in_an_image_column_is_one_line(tmp_path, image_dict):
    """PIL's DecompressionBombError was a 70-line traceback with exit 1."""
    dd, _ = image_dict
    train = dd["train"].cast_column("image", datasets.Image(decode=False))
    rows = train.to_dict()
    rows["image"][3] = {"bytes": bomb_png(), "path": None}
    bad = datasets.Dataset.from_dict(rows, features=train.features)
    datasets.DatasetDict({"train": bad, "test": dd["test"]}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError, match="refused as a possible decompression bomb: Image size") as info:
        load(hf_path=str(tmp_path / "ds"))
    assert "\n" not in str(info.value) and "column 'image'" in str(info.value)
