"""The data.* and partition.* keys of real federated data: defaults, checks, one-line errors."""

from __future__ import annotations

import sys

import pytest

from fedsim.cli import main
from fedsim.config.load import load_config
from fedsim.errors import ConfigError
from fedsim.schema.sections import DataConfig, PartitionConfig


def test_defaults():
    d, p = DataConfig(), PartitionConfig()
    assert (
        d.hf_path,
        d.hf_split_train,
        d.hf_split_test,
        d.hf_image_key,
        d.hf_text_key,
        d.hf_label_key,
        d.hf_group_key,
    ) == (None, "train", "test", "image", None, "label", None)
    assert (d.image_size, d.cifar100_labels) == (0, "fine")
    assert (p.by, p.flwr_partitioner, p.flwr_args) == ("label", None, {})


@pytest.mark.parametrize(
    "tree, fragment",
    [
        ({"data": {"dataset": "hf"}}, "data.dataset 'hf' needs data.hf_path"),
        (
            {"data": {"dataset": "mnist", "hf_group_key": "writer"}},
            "'data.hf_group_key' is read only with data.dataset hf, not 'mnist'",
        ),
        (
            {"data": {"dataset": "cifar10", "image_size": 64}},
            "'data.image_size' is read only with data.dataset hf or imagefolder, not 'cifar10'",
        ),
        ({"data": {"dataset": "imagefolder", "image_size": -1}}, "'data.image_size' = -1 is out of range"),
        (
            {"partition": {"scheme": "dirichlet", "flwr_args": {"alpha": 0.5}}},
            "'partition.flwr_args' is read only with partition.scheme flwr, not 'dirichlet'",
        ),
        ({"partition": {"scheme": "flwr"}}, "partition.scheme 'flwr' needs partition.flwr_partitioner"),
        ({"partition": {"by": "writer"}}, "'partition.by' = 'writer' is not allowed; allowed: label, superclass"),
        (
            {"data": {"dataset": "leaf-shakespeare"}, "model": {"name": "mlp"}},
            "model.name 'mlp' needs real-valued inputs; data.dataset 'leaf-shakespeare' gives token sequences: use a "
            "sequence model \\(char-lstm\\)",
        ),
        (
            {"data": {"dataset": "hf", "hf_path": "x", "hf_text_key": "text"}, "model": {"name": "simple-cnn"}},
            "model.name 'simple-cnn' needs real-valued inputs",
        ),
        (
            {"model": {"name": "char-lstm"}},
            "model.name 'char-lstm' reads token sequences; data.dataset 'synthetic-images' is not text",
        ),
        (
            {"data": {"dataset": "leaf-shakespeare", "feature_noise": 0.1}, "model": {"name": "char-lstm"}},
            "'data.feature_noise' > 0 needs real-valued inputs",
        ),
        (
            {"data": {"dataset": "leaf-shakespeare", "augment": True}, "model": {"name": "char-lstm"}},
            "'data.augment' = true needs images",
        ),
    ],
)
def test_bad_values_are_one_line_errors(tree, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        load_config(tree)
    assert "\n" not in str(info.value)


def test_valid_combinations_load():
    cfg = load_config(
        {
            "data": {"dataset": "leaf-shakespeare"},
            "model": {"name": "char-lstm"},
            "partition": {"scheme": "flwr", "flwr_partitioner": "DirichletPartitioner"},
        },
        ["partition.flwr_args.alpha=0.3", "partition.flwr_args.partition_by=label"],
    )
    assert cfg.partition.flwr_args == {"alpha": 0.3, "partition_by": "label"}
    cfg = load_config({"data": {"dataset": "hf", "hf_path": "a/b", "image_size": 32, "hf_group_key": "writer_id"}})
    assert (cfg.data.image_size, cfg.data.hf_group_key) == (32, "writer_id")


def test_cli_exit_2(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {dataset: leaf-femnist}\nmodel: {name: char-lstm}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsim: error: model.name 'char-lstm' reads token sequences") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_missing_extra_names_the_pip_command(tmp_path, monkeypatch, capsys):
    from fedsim.cli import main

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.parquet").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "datasets", None)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dataset: hf, hf_path: '{tmp_path / 'ds'}'}}\n")
    assert main(["partition", str(cfg), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err == "fedsim: error: data.dataset 'hf' needs the Hugging Face datasets library: pip install 'fedsim[hf]'\n"
