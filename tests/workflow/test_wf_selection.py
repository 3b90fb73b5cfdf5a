"""Honest model selection: by a validation metric, and by K-fold cross-validation."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from fedsim.errors import ConfigError
from fedsim.sweeps import read_summary_csv, select_settings, sweep


def test_kfold_selection_picks_the_learning_rate_that_learns(tiny, tmp_path):
    # rigged: lr 1e-6 cannot learn in 2 rounds (chance is 25%), lr 0.1 reaches 60-70% on both folds
    # (800 samples: with 400 per half, a 200-sample fold stays at chance too often)
    spec = {
        "name": "cv",
        "base": tiny(partition={"scheme": "iid"}, data={"n_train": 800}),
        "grid": {"train.lr": [1e-6, 0.1]},
        "tune": ["train.lr"],
        "seeds": [0],
    }
    result = sweep(spec, out=tmp_path / "cv", folds=2)
    d = result.sweep_dir
    assert result.n_failed == 0 and result.n_finished == 5  # 2 settings x 2 folds + the chosen one on all data
    (choice,) = result.selection
    assert choice.chosen == {"train.lr": "0.1"}
    rows = read_summary_csv(d / "summary.csv")
    cv = [r for r in rows if r["phase"] == "cv"]
    assert sorted((r["train.lr"], r["fold"]) for r in cv) == [("0.1", 0), ("0.1", 1), ("1e-06", 0), ("1e-06", 1)]
    for r in cv:  # the fold run evaluates on the held-out fold of the training data
        cfg = yaml.safe_load((d / r["run"] / "config.yaml").read_text())
        assert cfg["data"]["cv_folds"] == 2 and cfg["data"]["cv_fold"] == r["fold"]
    scores = {lr: [r["test_accuracy"] for r in cv if r["train.lr"] == lr] for lr in ("1e-06", "0.1")}
    assert choice.score_mean == pytest.approx(sum(scores["0.1"]) / 2)
    assert max(scores["1e-06"]) < 0.45 < min(scores["0.1"])
    (final,) = [r for r in rows if r["phase"] == "final"]
    assert final["train.lr"] == "0.1" and final["fold"] is None
    cfg = yaml.safe_load((d / final["run"] / "config.yaml").read_text())
    assert cfg["data"]["cv_folds"] == 0  # retrained on the full training data, tested on the test set
    assert choice.test_mean == pytest.approx(final["test_accuracy"])
    sel = (d / "selection.md").read_text()
    assert "2-fold cross-validation" in sel and f"{100 * final['test_accuracy']:.2f}" in sel
    assert "0.1" in (d / "selection.csv").read_text()


def test_select_by_val_accuracy_reads_validation_only(tiny, tmp_path, monkeypatch):
    # a fake run whose validation and test metrics disagree: selection must follow validation
    import fedsim.api

    def fake_run(config, overrides=(), out=None, *, resume=False, overwrite=False, hooks=None):
        lr, strat = config["train"]["lr"], config["strategy"]["name"]
        good = lr == 0.1
        summary = {
            "status": "finished",
            "rounds": 2,
            "strategy": strat,
            "seed": config["seed"],
            "val_accuracy": (0.9 if good else 0.5) + 0.01 * config["seed"],
            "test_accuracy": (0.3 if good else 0.8) + 0.01 * config["seed"],
            "heterogeneity": {},
        }
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "summary.json").write_text(json.dumps(summary))
        return SimpleNamespace(summary=summary)

    monkeypatch.setattr(fedsim.api, "run", fake_run)
    spec = {
        "base": tiny(),
        "overrides": ["federation.fraction_evaluate=1.0", "data.val_fraction=0.2"],
        "grid": {"strategy.name": ["fedavg", "fedprox"], "train.lr": [0.01, 0.1]},
        "tune": ["train.lr"],
        "seeds": [0, 1],
    }
    result = sweep(spec, out=tmp_path / "val", select_by="val_accuracy")
    assert len(result.selection) == 2
    for choice in result.selection:
        assert choice.chosen == {"train.lr": "0.1"}
        assert choice.score_mean == pytest.approx(0.905)
        assert choice.test_mean == pytest.approx(0.305)  # the honest (worse) test number, reported once
        assert choice.test_std == pytest.approx(0.00707106781, rel=1e-6)
    text = (result.sweep_dir / "selection.md").read_text()
    assert text.count("30.50 ± 0.71") == 2


def test_real_val_accuracy_selection(tiny, tmp_path):
    spec = {
        "base": tiny(partition={"scheme": "iid"}),
        "overrides": ["federation.fraction_evaluate=1.0", "data.val_fraction=0.2"],
        "grid": {"train.lr": [1e-6, 0.1]},
        "tune": ["train.lr"],
        "seeds": [0],
    }
    result = sweep(spec, out=tmp_path / "val", select_by="val_accuracy")
    (choice,) = result.selection
    assert choice.chosen == {"train.lr": "0.1"}
    by_lr = {r["train.lr"]: r for r in result.rows}
    assert choice.score_mean == pytest.approx(by_lr["0.1"]["val_accuracy"])
    assert by_lr["0.1"]["val_accuracy"] > by_lr["1e-06"]["val_accuracy"]
    assert choice.test_mean == pytest.approx(by_lr["0.1"]["test_accuracy"])


def test_select_settings_never_needs_test_metrics():
    rows = [
        {"strategy.name": "fedavg", "train.lr": "0.01", "seed": 0, "score": 0.5},
        {"strategy.name": "fedavg", "train.lr": "0.01", "seed": 1, "score": 0.7},
        {"strategy.name": "fedavg", "train.lr": "0.1", "seed": 0, "score": 0.55},
        {"strategy.name": "fedavg", "train.lr": "0.1", "seed": 1, "score": 0.6},
        {"strategy.name": "fedprox", "train.lr": "0.01", "seed": 0, "score": None},
        {"strategy.name": "fedprox", "train.lr": "0.1", "seed": 0, "score": 0.2},
    ]
    choices = {c.group["strategy.name"]: c for c in select_settings(rows, ["strategy.name"], ["train.lr"], "score")}
    assert choices["fedavg"].chosen == {"train.lr": "0.01"}  # mean 0.6 beats 0.575
    assert choices["fedavg"].score_mean == pytest.approx(0.6)
    assert choices["fedprox"].chosen == {"train.lr": "0.1"}  # a candidate without a score cannot win
    low = select_settings(rows, ["strategy.name"], ["train.lr"], "score", minimize=True)
    assert {c.group["strategy.name"]: c.chosen["train.lr"] for c in low} == {"fedavg": "0.1", "fedprox": "0.1"}


@pytest.mark.parametrize(
    "kwargs, spec_extra, message",
    [
        ({"select_by": "test_accuracy"}, {"tune": ["train.lr"]}, "not a validation metric"),
        ({"select_by": "val_accuracy"}, {}, "needs 'tune'"),
        ({"select_by": "val_accuracy"}, {"tune": ["train.lr"]}, "fraction_evaluate"),
        ({"folds": 1}, {"tune": ["train.lr"]}, "--folds"),
        ({"workers": 0}, {}, "--workers"),
    ],
)
def test_selection_misuse_is_a_config_error(tiny, tmp_path, kwargs, spec_extra, message):
    spec = {"base": tiny(), "grid": {"train.lr": [0.01, 0.1]}, **spec_extra}
    with pytest.raises(ConfigError, match=message):
        sweep(spec, out=tmp_path / "never", **kwargs)
    assert not (tmp_path / "never").exists()
