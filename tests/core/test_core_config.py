"""Config loading, overrides and validation errors."""

import pytest

from fedsim.config.load import from_yaml_text, load_config
from fedsim.errors import ConfigError
from fedsim.schema.experiment import ExperimentConfig
from fedsim.schema.identity import config_hash, to_yaml


def test_defaults_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\ntrain:\n  lr: 0.1\n  momentum: ${train.lr}\n")
    cfg = load_config(p, ["partition.beta=0.1", "train.epochs=[1,3]"])
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.seed == 3 and cfg.train.lr == 0.1 and cfg.train.momentum == 0.1  # interpolation
    assert cfg.partition.beta == 0.1 and list(cfg.train.epochs) == [1, 3]
    assert from_yaml_text(to_yaml(cfg)) == cfg


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["data.datset=mnist"], "did you mean 'data.dataset'"),
        (["trian.lr=0.1"], "did you mean 'train'"),
        (["train.lr=abc"], "train.lr"),
        (["train.lr=-1"], "out of range"),
        (["partition.beta=0"], "partition.beta"),
        (["strategy.name=fedavgg"], "did you mean 'fedavg'"),
        (["model.name=resnet19"], "allowed"),
        (["train.epochs=[3,1]"], "train.epochs"),
        (["federation.fraction_fit=1.5"], "federation.fraction_fit"),
        (["engine.device=gpu"], "engine.device"),
        (["strategy.name=moon"], "projection_head"),
        (["lr"], "key=value"),
    ],
)
def test_bad_values_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    msg = str(e.value)
    assert fragment in msg
    assert "\n" not in msg


def test_hash_ignores_placement_but_not_results():
    a = load_config(None, [])
    b = load_config(None, ["engine.workers=4", "output.checkpoint_every=5"])
    c = load_config(None, ["seed=1"])
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_bare_on_off_for_batch_clients(tmp_path):
    """YAML 1.1 reads a bare on/off as a boolean: both spellings mean the mode."""
    assert load_config(None, ["engine.batch_clients=on"]).engine.batch_clients == "on"
    assert load_config(None, ["engine.batch_clients=off"]).engine.batch_clients == "off"
    p = tmp_path / "c.yaml"
    p.write_text("engine:\n  batch_clients: on\n")
    assert load_config(p).engine.batch_clients == "on"
    assert load_config(None, ["engine.batch_clients=auto"]).engine.batch_clients == "auto"
