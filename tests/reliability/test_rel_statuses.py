"""Statuses that say what happened: parties that cannot do what the config asks of them
are refused up front (or left out, said once), instead of a run that "diverges" on
empty parties or "finishes" with every evaluation failed or no local metrics."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

import fedsim
from fedsim.cli import main
from fedsim.errors import ConfigError
from fedsim.inputs.localtest import check_coverage, split_local_test


def _cli(tmp_path: Path, capsys, cfg: dict, *overrides: str) -> tuple[int, list[str], Path]:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "r"
    code = main(["run", str(path), *overrides, "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err.strip().splitlines(), out


@pytest.mark.parametrize("strategy", ["fedavg", "scaffold", "fedprox"])
def test_empty_parties_are_refused_up_front_not_reported_as_a_divergence(tmp_path, tiny, capsys, strategy):
    """quantity-skew beta=0.01 min_size=0 (seed 1) gives parties 0, 1, 2 nothing: every
    algorithm "diverged" in round 1 ("3 of 4 clients returned non-finite weights")."""
    cfg = tiny(
        seed=1,
        partition={"scheme": "quantity-skew", "beta": 0.01, "min_size": 0, "n_parties": 4},
        strategy={"name": strategy},
    )
    code, err, out = _cli(tmp_path, capsys, cfg)
    assert code == 2 and len(err) == 1, err
    assert "gives 3 of 4 parties no training sample (parties 0, 1, 2)" in err[0] and "min_size" in err[0]
    assert "non-finite" not in err[0] and (not out.exists() or not any(out.iterdir()))


def test_a_local_test_that_gives_no_party_a_sample_is_refused(tmp_path, tiny, capsys):
    """One sample a party with eval.local_test=split: a class with one sample stays in
    training, so no party had a test sample: no local metrics, no parties.jsonl, no word."""
    cfg = tiny(
        data={"n_train": 40},
        partition={"scheme": "iid", "n_parties": 40},
        eval={"local_test": "split"},
        federation={"rounds": 1, "fraction_fit": 0.1},
    )
    code, err, _ = _cli(tmp_path, capsys, cfg)
    assert code == 2 and len(err) == 1, err
    assert "eval.local_test=split gives none of the 40 parties a test sample" in err[0]


def test_parties_without_a_local_test_sample_are_named_once(caplog):
    labels = np.array([0, 0, 1, 1, 0, 2, 3])
    train, test = split_local_test({0: np.arange(4), 1: np.array([4, 5, 6])}, labels, 0.5, seed=0)
    assert test[0].size == 2 and test[1].size == 0 and train[1].tolist() == [4, 5, 6]
    with caplog.at_level(logging.WARNING, logger="fedsim.inputs.localtest"):
        check_coverage("split", test)
    (message,) = caplog.messages
    assert "1 of 2 parties have no test sample" in message and "parties 1 are left out" in message
    with pytest.raises(ConfigError, match="gives none of the 1 parties"):
        check_coverage("split", {1: test[1]})


def test_one_sample_parties_are_left_out_of_validation_not_failed_every_round(tmp_path, tiny, caplog, capsys):
    """data.val_fraction with one-sample parties: they failed evaluation every round
    ("non-finite val_loss") and the run still ended "finished"; now they are not
    sampled for evaluation, said once; with every party of one sample it is refused."""
    cfg = tiny(
        data={"n_train": 200, "val_fraction": 0.2},
        partition={"scheme": "quantity-skew", "beta": 1.0, "min_size": 1, "n_parties": 40},
        federation={"rounds": 2, "fraction_evaluate": 1.0},
        train={"epochs": 1},
    )
    with caplog.at_level(logging.WARNING, logger="fedsim.prepare.preflight"):
        res = fedsim.run(cfg, out=tmp_path / "r")
    sizes = [sum(row) for row in json.loads((res.run_dir / "partition.json").read_text())["class_counts"]]
    single = {p for p, n in enumerate(sizes) if n == 1}
    assert single, "the partition must have one-sample parties"
    (warning,) = [m for m in caplog.messages if "no validation sample" in m]
    assert f"{len(single)} of 40 parties have one sample" in warning
    rows = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(not r["failures"] for r in rows) and res.summary["failures_total"] == 0
    evaluated = [
        json.loads(line) for line in (res.run_dir / "clients.jsonl").read_text().splitlines() if '"evaluate"' in line
    ]
    assert len(evaluated) == 2 * (40 - len(single)) and not {r["party"] for r in evaluated} & single
    assert res.summary["val_accuracy"] is not None

    all_single = tiny(
        data={"n_train": 40, "val_fraction": 0.2},
        partition={"scheme": "iid", "n_parties": 40},
        federation={"rounds": 1, "fraction_evaluate": 1.0},
    )
    (tmp_path / "x").mkdir()
    code, err, _ = _cli(tmp_path / "x", capsys, all_single)
    assert code == 2 and len(err) == 1 and "gives no party a validation sample" in err[0], err
