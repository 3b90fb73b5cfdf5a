"""The f a robust aggregator assumes: from the attack when one is configured, else the
most the cohort tolerates; never a silent f = 0 (issue: Multi-Krum's default averaged
every reply, Bulyan's was an untrimmed mean)."""

from __future__ import annotations

import pytest

import fedsim
import strategies
from fedsim.cli import main
from fedsim.config.load import load_config


def _f(cfg) -> tuple[int, list[str]]:
    params, lines = strategies.resolve(load_config(cfg))
    return params.num_malicious, lines


@pytest.mark.parametrize("name", ["krum", "multi-krum", "bulyan"])
def test_f_follows_the_attack(tiny, name):
    # 10 parties, 2 malicious (fraction 0.2), every party in each cohort: f = 2;
    # half the parties sampled: ceil(2 x 5 / 10) = 1 expected per cohort (Bulyan: 2 x 7 / 14)
    parts = {"n_parties": 11 if name == "bulyan" else 10}
    f, lines = _f(tiny(partition=parts, strategy={"name": name}, attack={"name": "sign-flip", "fraction": 0.2}))
    assert f == 2 and lines == [
        f"{name}: f = 2, the malicious parties expected in a cohort of {parts['n_parties']} (attack.*)"
    ]
    f, _ = _f(
        tiny(
            partition={"n_parties": 14 if name == "bulyan" else 10},
            federation={"fraction_fit": 0.5},
            strategy={"name": name},
            attack={"name": "sign-flip", "parties": [0, 1]},
        )
    )
    assert f == 1


def test_without_an_attack_f_is_the_most_the_cohort_tolerates(tiny):
    # Krum and Multi-Krum need n > 2f + 2: 10 replies -> 3; Bulyan n >= 4f + 3: 10 -> 1
    assert _f(tiny(partition={"n_parties": 10}, strategy={"name": "multi-krum"}))[0] == 3
    assert _f(tiny(partition={"n_parties": 10}, strategy={"name": "krum"}))[0] == 3
    assert _f(tiny(partition={"n_parties": 10}, strategy={"name": "bulyan"}))[0] == 1
    # a given f is kept, and said
    f, lines = _f(tiny(partition={"n_parties": 10}, strategy={"name": "multi-krum", "num_malicious": 0}))
    assert f == 0 and lines == ["multi-krum: f = 0, strategy.num_malicious"]


def test_an_attack_bulyan_cannot_tolerate_is_refused(tiny):
    with pytest.raises(fedsim.errors.ConfigError, match=r"'bulyan' with f=2 \(the attack's expected malicious"):
        load_config(
            tiny(partition={"n_parties": 10}, strategy={"name": "bulyan"}, attack={"name": "ipm", "fraction": 0.2})
        )


def test_multi_krum_with_an_attack_drops_the_expected_attackers_in_the_run(tmp_path, tiny, capsys):
    cfg = tiny(
        partition={"n_parties": 5}, strategy={"name": "multi-krum"}, attack={"name": "sign-flip", "parties": [4]}
    )
    res = fedsim.run(cfg, out=tmp_path / "mk")
    assert [r["robust_f"] for r in res.history] == [1.0, 1.0]
    assert [r["multikrum_selected"] for r in res.history] == [4.0, 4.0]  # not all 5: the default defends
    # the CLI's start line says which f the run uses
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "cli"), "--quiet", "federation.rounds=1"]) == 0
    assert "multi-krum: f = 1, the malicious parties expected in a cohort of 5 (attack.*)" in capsys.readouterr().out
