"""attack.* and defence.* in a config: each against its own dataclass, the malicious parties
against the federation, the combinations that are refused, one line and exit 2; every
declared parameter changes the run (no key is accepted and ignored)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import attacks
import fedsim
from fedsim.cli import main
from fedsim.config.load import load_config
from fedsim.errors import ConfigError
from fedsim.schema.identity import config_hash
from strategies import defences
from strategies.params import hyperparameters

ROOT = Path(__file__).resolve().parents[2]


def test_each_attack_takes_its_own_parameters_with_their_defaults(tiny):
    cfg = load_config(tiny(attack={"name": "alie", "fraction": 0.5}))
    assert cfg.attack.name == "alie" and cfg.attack.fraction == 0.5 and cfg.attack.z is None
    assert load_config(tiny(attack={"name": "ipm"})).attack.epsilon == 0.1
    assert load_config(tiny(), ["attack.name=sign-flip", "attack.scale=3"]).attack.scale == 3.0
    assert load_config(tiny(defence={"name": "norm-bound", "norm_bound": 2})).defence.norm_bound == 2.0
    # without an attack or a defence a config has the hash it had before these sections
    assert config_hash(load_config(tiny())) == config_hash(load_config(tiny(attack={"name": "none"})))


@pytest.mark.parametrize(
    "sections, fragment",
    [
        ({"attack": {"name": "signflip"}}, r"'attack.name' = 'signflip' is not allowed \(did you mean 'sign-flip'\?\)"),
        (
            {"attack": {"name": "alie", "epsilon": 0.1}},
            r"attack 'alie' has no parameter 'attack.epsilon'; its parameters: fraction, parties, z",
        ),
        ({"attack": {"fraction": 0.2}}, r"attack 'none' has no parameter 'attack.fraction'; its parameters: none"),
        (
            {"attack": {"name": "ipm", "epsilon": -1}},
            r"'attack.epsilon' = -1.0 is out of range for attack 'ipm'; allowed: > 0",
        ),
        ({"attack": {"name": "ipm", "fraction": 1.5}}, r"'attack.fraction' = 1.5 is out of range .* allowed: \[0, 1\]"),
        ({"attack": {"name": "ipm", "parties": [1, 4]}}, r"'attack.parties' names \[4\]; the parties are 0..3"),
        ({"attack": {"name": "ipm", "parties": [1, 1]}}, r"names a party twice"),
        (
            {"attack": {"name": "ipm", "parties": [1], "fraction": 0.5}},
            r"'attack.fraction' and 'attack.parties' exclude each other",
        ),
        ({"attack": {"name": "label-flip", "mode": "all", "source_class": 1}}, r"read only with attack.mode: pair"),
        ({"attack": {"name": "label-flip", "source_class": 3, "target_class": 3}}, r"both are 3"),
        (
            {"attack": {"name": "label-flip", "mode": "some"}},
            r"'attack.mode' = 'some' is out of range .* allowed: pair, all",
        ),
        (
            {"defence": {"name": "norm-bound", "norm_bound": 0}},
            r"'defence.norm_bound' = 0.0 is out of range .* allowed: > 0 or null",
        ),
        (
            {"defence": {"name": "norm-bound", "radius": 1}},
            r"defence 'norm-bound' has no parameter 'defence.radius'; its parameters: norm_bound",
        ),
        (
            {"defence": {"name": "centred-clip"}, "strategy": {"name": "krum"}},
            r"'centred-clip' is an aggregator built on the mean; strategy 'krum'",
        ),
        (
            {"strategy": {"name": "bulyan", "num_malicious": 1}},
            r"'bulyan' with strategy.num_malicious=1 needs a cohort of at least 4f \+ 3 = 7 clients; the config samples 4",
        ),
    ],
)
def test_bad_attack_and_defence_configs_are_refused(tiny, sections, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(tiny(**sections))


@pytest.mark.parametrize(
    "sections, fragment",
    [
        (
            {"attack": {"name": "label-flip"}},
            "'attack.source_class' = 5 is out of range: synthetic-images has classes 0..3",
        ),
        ({"attack": {"name": "backdoor", "target_class": 4}}, "'attack.target_class' = 4 is out of range"),
        (
            {"attack": {"name": "backdoor"}, "data": {"dataset": "synthetic"}, "model": {"name": "mlp"}},
            "attack 'backdoor' stamps a pixel trigger on images; data set 'synthetic' has no images",
        ),
    ],
)
def test_what_only_the_data_can_tell_is_refused_before_anything_is_written(tmp_path, tiny, sections, fragment):
    path = tmp_path / "c.yaml"
    cfg = tiny(**sections)
    if cfg["data"]["dataset"] == "synthetic":
        cfg["data"] = {"dataset": "synthetic", "n_train": 400, "n_test": 100}
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match=fragment):
        fedsim.run(cfg, out=tmp_path / "r")


def test_the_cli_refuses_a_bad_attack_key_with_one_line(tmp_path, tiny, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    assert main(["run", str(path), "attack.name=ipm", "attack.epsilonn=0.5", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "fedsim: error: attack 'ipm' has no parameter 'attack.epsilonn' (did you mean 'epsilon'?); its parameters: fraction, parties, epsilon"
    ]


def test_fedsim_attacks_lists_every_attack_and_defence(capsys):
    assert main(["attacks"]) == 0
    out = capsys.readouterr().out
    for name in attacks.available():
        assert f"attack.name={name}" in out
        for h in hyperparameters(attacks.get(name).Params):
            assert f"attack.{h.name} = " in out and h.info.help in out
    for name in defences.available():
        assert f"defence.name={name}" in out
    assert main(["attacks", "alie"]) == 0
    assert "attack.z = null" in capsys.readouterr().out


def test_the_readme_attack_table_is_generated_from_the_registries():
    assert attacks.table_markdown() in (ROOT / "README.md").read_text(), (
        "regenerate it: python -c 'import attacks; print(attacks.table_markdown())'"
    )


def test_every_parameter_is_declared_with_a_meaning_and_a_source():
    for name in attacks.available():
        a = attacks.get(name)
        assert a.summary, name
        assert name == "none" or a.paper, name
        for h in hyperparameters(a.Params):
            assert h.info.help and h.info.source, (name, h.name)
            assert h.default is None or h.info.admits(h.default), (name, h.name)
    for name in defences.available():
        for h in hyperparameters(defences.get(name).Params):
            assert h.info.help and h.info.source, (name, h.name)


# (attack or defence section, name, key, another allowed value, extra sections): the value must change the run
BASE_ATTACK = {"parties": [0, 1]}
CHANGES = [
    ("attack", "sign-flip", "fraction", 0.5, {}),
    ("attack", "sign-flip", "parties", [2, 3], {}),
    ("attack", "sign-flip", "scale", 3.0, {}),
    ("attack", "scale", "factor", 2.0, {}),
    ("attack", "alie", "z", 1.5, {}),
    ("attack", "ipm", "epsilon", 1.0, {}),
    ("attack", "label-flip", "mode", "all", {}),
    ("attack", "label-flip", "source_class", 2, {}),
    ("attack", "label-flip", "target_class", 0, {}),
    ("attack", "backdoor", "target_class", 3, {}),
    ("attack", "backdoor", "poison_fraction", 0.9, {}),
    ("attack", "backdoor", "boost", 4.0, {}),
    ("defence", "norm-bound", "norm_bound", 0.01, {}),
    ("defence", "centred-clip", "radius", 0.01, {}),
    ("defence", "centred-clip", "iterations", 3, {}),
]
#: what a section needs beyond its defaults in the tiny run (4 classes)
NEEDS = {"label-flip": {"source_class": 1, "target_class": 3}, "backdoor": {"target_class": 1}}


def test_the_change_table_covers_every_declared_parameter():
    declared = {("attack", n, h.name) for n in attacks.available() for h in hyperparameters(attacks.get(n).Params)}
    declared -= {("attack", n, k) for n in attacks.available() for k in ("fraction", "parties") if n != "sign-flip"}
    declared |= {("defence", n, h.name) for n in defences.available() for h in hyperparameters(defences.get(n).Params)}
    assert declared == {(s, n, k) for s, n, k, *_ in CHANGES}


_DEFAULT_RUNS: dict = {}


_DEFAULT_RUN = {("sign-flip", "fraction"), ("alie", "z"), ("backdoor", "target_class"), ("norm-bound", "norm_bound")}


@pytest.mark.parametrize(
    "section, name, key, value, over",
    [c if c[1:3] in _DEFAULT_RUN else pytest.param(*c, marks=pytest.mark.slow) for c in CHANGES],
    ids=[f"{n}.{k}" for _, n, k, *_ in CHANGES],
)
def test_every_parameter_changes_the_run(tmp_path, tiny, section, name, key, value, over):
    def run(tag, **extra):
        values = {"name": name, **NEEDS.get(name, {}), **extra}
        if section == "attack" and "fraction" not in values and "parties" not in values:
            values.update(BASE_ATTACK)
        sections = {
            "federation": {"rounds": 2 if section == "defence" else 1},
            "train": {"epochs": 1},
            "eval": {"train_sample": 0, "model_heterogeneity": False},
            "output": {"plots": False, "checkpoint_every": 0},
            section: values,
            **({"attack": {"name": "scale", **BASE_ATTACK}} if section == "defence" else {}),
        }
        r = fedsim.run(tiny(**sections), out=tmp_path / tag)
        return torch.load(r.run_dir / "model.pt", weights_only=True)

    ref = (section, name)
    if ref not in _DEFAULT_RUNS:
        _DEFAULT_RUNS[ref] = run("default")
    extra = {key: value}
    if key == "mode":  # mode all reads no class: drop the pair's classes
        extra.update(source_class=5, target_class=3)
    if key == "fraction":
        extra["parties"] = None
    default, changed = _DEFAULT_RUNS[ref], run("changed", **extra)
    assert any(not torch.equal(default[k], changed[k]) for k in default), f"{section}.{key}={value} changed nothing"


def test_the_malicious_count_is_the_floor_and_at_least_one():
    assert [attacks.malicious_count(f, 10) for f in (0.0, 0.05, 0.2, 0.3, 1.0)] == [0, 1, 2, 3, 10]
    assert attacks.malicious_count(0.2, 4) == 1
