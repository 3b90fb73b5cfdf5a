"""Every party's own test data (issue 16): the split, the held-out parties, the
per-party evaluation and its statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

import fedsim
import partitioners
from fedsim.config.load import ConfigError
from fedsim.inputs.localtest import match_local_test, split_local_test
from fedsim.inputs.run_inputs import RunSettings, experiment_for, holdout_parties
from fedsim.measures.metrics import classification_metrics
from fedsim.rundir.store import ClientStateStore, read_jsonl
from fedsim.server.party_eval import (
    PartyEvaluator,
    PartyScore,
    accuracy_and_macro_f1,
    eval_cohort,
    spread_stats,
    summarise,
)
from fedsim.server.summary import party_summary
from fedsim.sweeps.spec import PlannedRun
from fedsim.sweeps.tables import read_summary_csv, summary_row, to_csv


def test_split_takes_the_rounded_share_of_each_class_and_never_overlaps():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1 + [0] * 7)
    dataidxs = {0: np.arange(16), 1: np.arange(16, 23)}
    train, test = split_local_test(dataidxs, labels, 0.2, seed=3)
    # party 0: class 0 has 10 -> 2, class 1 has 5 -> 1, class 2 has 1 -> stays in training
    assert np.bincount(labels[test[0]], minlength=3).tolist() == [2, 1, 0]
    assert np.bincount(labels[test[1]], minlength=3).tolist() == [1, 0, 0]  # round(1.4) = 1
    for p in dataidxs:
        assert np.intersect1d(train[p], test[p]).size == 0
        assert np.array_equal(np.sort(np.concatenate([train[p], test[p]])), dataidxs[p])
    again = split_local_test(dataidxs, labels, 0.2, seed=3)[1]
    assert all(np.array_equal(test[p], again[p]) for p in test)


def test_match_follows_each_partys_label_proportions():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 20)
    test_labels = np.repeat(np.arange(3), 50)
    dataidxs = {0: np.arange(40), 1: np.arange(40, 60)}
    out = match_local_test(dataidxs, labels, test_labels, size=8, seed=0)
    assert np.bincount(test_labels[out[0]], minlength=3).tolist() == [6, 2, 0]
    assert np.bincount(test_labels[out[1]], minlength=3).tolist() == [0, 0, 8]
    # proportional sizes: party 1 holds 20 of 60 training samples -> 600 of 1800 test samples;
    # party 0 would get 1200, 900 of them of class 0 which has 600: 800 kept, 3:1
    big = np.repeat(np.arange(3), 600)
    prop = match_local_test(dataidxs, labels, big, size=None, seed=0)
    assert np.bincount(big[prop[0]], minlength=3).tolist() == [600, 200, 0]
    assert np.bincount(big[prop[1]], minlength=3).tolist() == [0, 0, 600]
    assert np.unique(prop[0]).size == prop[0].size  # without replacement within a party
    # 150 test samples: 66 for party 0 (50 / 0.75), rounding by largest remainder
    short = match_local_test(dataidxs, labels, test_labels, size=None, seed=0)
    assert np.bincount(test_labels[short[0]], minlength=3).tolist() == [50, 16, 0]


def test_a_runs_saved_local_test_never_overlaps_its_training_indices(tmp_path, tiny):
    res = fedsim.run(tiny(eval={"local_test": "split"}, federation={"rounds": 1}), out=tmp_path / "run")
    labels = experiment_for(RunSettings(res.config, str(res.run_dir))).bundle.y_train.numpy()
    train = partitioners.load_dataidxs(res.run_dir / "dataidxs.npz", labels)
    test, source = partitioners.load_local_test(res.run_dir / "dataidxs.npz")
    assert source == "train" and sorted(test) == sorted(train)
    for p in train:
        assert test[p].size > 0 and np.intersect1d(train[p], test[p]).size == 0


def test_holdout_share_or_count():
    assert holdout_parties(0.0, 10, 0) == []
    assert len(holdout_parties(0.25, 10, 0)) == 2  # round(2.5) = 2 (banker's rounding)
    assert len(holdout_parties(3, 10, 0)) == 3
    assert holdout_parties(3, 10, 0) == holdout_parties(3, 10, 0)
    assert holdout_parties(3, 10, 0) != holdout_parties(3, 10, 1)


@pytest.mark.parametrize("value, n", [(0.1, 4), (0.125, 4), (0.04, 10)])
def test_a_holdout_share_that_holds_out_nobody_is_refused(tiny, value, n):
    """0.1 of 4 parties rounds to 0: the run held out none and said nothing."""
    from fedsim.config.load import load_config

    with pytest.raises(ConfigError, match=rf"holds out round\(.*\) = 0 parties: .* share above 0.5/{n}"):
        load_config(
            tiny(
                partition={"scheme": "iid", "n_parties": n},
                federation={"holdout_parties": value},
                eval={"local_test": "split"},
            )
        )
    assert len(holdout_parties(0.2, 4, 0)) == 1  # round(0.8) = 1: allowed


def test_eval_cohort_draws_training_and_held_out_parties_in_proportion():
    parties = list(range(100))
    held = list(range(80, 100))
    assert eval_cohort(parties, held, 0, 0) == parties
    chosen = eval_cohort(parties, held, 20, 0)
    assert len([p for p in chosen if p < 80]) == 20 and len([p for p in chosen if p >= 80]) == 5
    assert chosen == eval_cohort(parties, held, 20, 0)


def test_spread_stats_by_hand():
    values = [0.1 * i for i in range(1, 11)]
    weights = [1] * 9 + [11]
    s = spread_stats(values, weights)
    assert s["mean"] == pytest.approx(0.55)
    assert s["wmean"] == pytest.approx((sum(values[:9]) + 11 * 1.0) / 20)
    assert s["std"] == pytest.approx(np.std(values))
    assert s["worst10"] == pytest.approx(0.1) and s["best10"] == pytest.approx(1.0)
    s = spread_stats([0.5, 0.9] * 10 + [0.0], [1] * 21)  # 21 values: ceil(2.1) = 3 worst
    assert s["worst10"] == pytest.approx((0.0 + 0.5 + 0.5) / 3)


def test_fairness_measures_by_hand_in_metrics_summary_and_summary_csv(tmp_path):
    # four parties: 0.2, 0.4, 0.6, 0.8 -> sum 2.0, sum of squares 0.04+0.16+0.36+0.64 = 1.2
    s = spread_stats([0.8, 0.2, 0.6, 0.4], [1, 1, 1, 1])
    assert s["jain"] == pytest.approx(2.0**2 / (4 * 1.2))  # 0.8333...
    assert s["worst"] == pytest.approx(0.2) and s["best10"] == pytest.approx(0.8)
    assert s["worst10"] == pytest.approx(0.2)  # ceil(0.4) = 1 party
    assert spread_stats([0.7] * 5, [1] * 5)["jain"] == pytest.approx(1.0)  # all equal
    assert spread_stats([1.0, 0.0, 0.0, 0.0], [1] * 4)["jain"] == pytest.approx(0.25)  # 1/n
    assert spread_stats([0.0, 0.0], [1, 1])["jain"] == 1.0  # all equal at 0: no 0/0
    scores = [PartyScore(p, "local", False, 10, a, 1.0, a) for p, a in enumerate([0.8, 0.2, 0.6, 0.4])]
    row = summarise(scores)
    assert row["local_accuracy_jain"] == pytest.approx(1 / 1.2) and row["local_accuracy_worst"] == 0.2
    summary = party_summary([{"round": 1}, {"round": 2, **row}], [])
    assert summary["local_test_accuracy_jain"] == row["local_accuracy_jain"]
    assert summary["local_test_accuracy_worst"] == 0.2 and summary["local_test_accuracy_best10"] == 0.8
    run = PlannedRun("r", {}, 0, {}, "h", status="finished", summary={"status": "finished", **summary})
    (tmp_path / "summary.csv").write_text(to_csv([summary_row(run, [], False)]))
    back = read_summary_csv(tmp_path / "summary.csv")[0]
    for stat in ("jain", "worst", "best10", "worst10", "std"):
        assert back[f"local_test_accuracy_{stat}"] == pytest.approx(summary[f"local_test_accuracy_{stat}"])


def test_held_out_parties_never_train_and_are_evaluated(tmp_path, tiny):
    cfg = tiny(
        partition={"n_parties": 6},
        federation={"rounds": 4, "fraction_fit": 0.5, "holdout_parties": 2},
        eval={"local_test": "split"},
        data={"n_train": 480},
    )
    res = fedsim.run(cfg, out=tmp_path / "run")
    held = res.summary["holdout_parties"]
    assert len(held) == 2
    trained = {r["party"] for r in read_jsonl(res.run_dir / "clients.jsonl")}
    assert trained and not trained & set(held)
    rows = read_jsonl(res.run_dir / "parties.jsonl")
    assert {r["party"] for r in rows if r["holdout"]} == set(held)
    assert {r["party"] for r in rows if not r["holdout"]} == set(range(6)) - set(held)
    assert res.summary["holdout_local_test_accuracy"] is not None


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"federation": {"holdout_parties": 2}}, "needs each party's own test data"),
        ({"federation": {"holdout_parties": 4}, "eval": {"local_test": "split"}}, "from 1 to 3"),
        ({"federation": {"holdout_parties": 1.5}, "eval": {"local_test": "split"}}, "a share in"),
        ({"eval": {"local_test": "every"}}, "eval.local_test"),
        ({"eval": {"local_test": "match", "local_test_fraction": 0.3}}, "local_test_fraction"),
        ({"eval": {"local_test": "split", "local_test_fraction": 1.0}}, "local_test_fraction"),
    ],
)
def test_bad_local_test_settings_are_refused(tmp_path, tiny, overrides, message):
    with pytest.raises(ConfigError, match=message):
        fedsim.run(tiny(**overrides), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def fedper_run(tmp_path_factory, tiny):
    cfg = tiny(strategy={"name": "fedper"}, eval={"local_test": "split"}, data={"noise": 0.4, "feature_noise": 0.3})
    return fedsim.run(cfg, out=tmp_path_factory.mktemp("fedper") / "run")


def _evaluator(res) -> PartyEvaluator:
    exp = experiment_for(RunSettings(res.config, str(res.run_dir)))
    return PartyEvaluator(exp, torch.device("cpu"), ClientStateStore(res.run_dir / "client_state"))


def test_the_vmapped_pass_equals_the_loop(fedper_run):
    ev = _evaluator(fedper_run)
    state = torch.load(fedper_run.run_dir / "model.pt", weights_only=True)
    loop_metrics, loop_rows = ev(2, state)
    ev.batched = True  # the GPU path, forced on the CPU
    vmap_metrics, vmap_rows = ev(2, state)
    assert len(loop_rows) == len(vmap_rows) == 8
    for a, b in zip(loop_rows, vmap_rows):
        assert (a["party"], a["mode"], a["n_test"], a["accuracy"]) == (
            b["party"],
            b["mode"],
            b["n_test"],
            b["accuracy"],
        )
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_evaluation_repeats_exactly_and_matches_the_run(fedper_run):
    ev = _evaluator(fedper_run)
    state = torch.load(fedper_run.run_dir / "model.pt", weights_only=True)
    _, rows = ev(2, state)
    recorded = [r for r in read_jsonl(fedper_run.run_dir / "parties.jsonl") if r["round"] == 2]
    assert rows == recorded


def test_finetuning_for_zero_epochs_is_the_global_model(fedper_run):
    ev = _evaluator(fedper_run)
    state = torch.load(fedper_run.run_dir / "model.pt", weights_only=True)
    same = ev.finetune(0, 2, state, 0)
    assert all(torch.equal(same[k], state[k]) for k in state)
    tuned = ev.finetune(0, 2, state, 1)
    assert not torch.equal(tuned["classifier.weight"], state["classifier.weight"])
    assert all(torch.equal(a, b) for a, b in zip(tuned.values(), ev.finetune(0, 2, state, 1).values()))


def test_vectorised_scores_equal_classification_metrics():
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 6, size=(30, 5, 5))
    cms[3] = 0
    cms[4, :, 2] = 0  # a class never predicted
    cms[4, 2, :] = 0  # nor present
    acc, f1 = accuracy_and_macro_f1(cms)
    for i, cm in enumerate(cms):
        ref = classification_metrics(cm)
        assert acc[i] == pytest.approx(ref["accuracy"], abs=1e-15)
        assert f1[i] == pytest.approx(ref["f1_macro"], abs=1e-15)


def test_client_state_cache_is_keyed_by_content(tmp_path):
    """A state this process wrote comes back from memory only while the file still holds
    those bytes: a copy (changing it changes nothing stored), and a file replaced
    behind the store's back (another writer, same size) is read from disk."""
    from fedsim.rundir.store import remember_writes, save_tensors

    remember_writes()  # as a process that evaluates personal models does
    store = ClientStateStore(tmp_path)
    store.save(3, {"w": torch.ones(4)})
    first = store.load(3)
    assert torch.equal(first["w"], torch.ones(4))
    first["w"].add_(5)
    assert torch.equal(store.load(3)["w"], torch.ones(4))
    save_tensors(store.path(3), {"w": torch.full((4,), 2.0)})  # same shape and size
    assert torch.equal(store.load(3)["w"], torch.full((4,), 2.0))
    assert store.load(4) is None


def test_a_personalised_runs_summary_and_plot_lead_with_the_parties_own_models(tmp_path, tiny, capsys):
    """The CLI's summary and plots/accuracy.png show the own models' accuracy first (what
    FedPer is for), beside the global model's; a long run directory stays on one line."""
    from fedsim.cli import main
    from fedsim.rundir.plots import run_figures

    path = tmp_path / "fedper.yaml"
    path.write_text(
        yaml.safe_dump(tiny(strategy={"name": "fedper"}, eval={"local_test": "split"}, output={"plots": True}))
    )
    out = tmp_path / ("a-run-directory-whose-path-is-longer-than-the-eighty-columns-of-a-pipe-" + "x" * 20)
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    lines = capsys.readouterr().out.splitlines()

    def row(key: str) -> int:
        return next(i for i, ln in enumerate(lines) if ln.startswith(f"│ {key} "))

    assert "fedsim run: fedper, Dir(0.5)" in lines[1]
    assert f"{summary['personal_test_accuracy']:.4f}" in lines[row("personal_test_accuracy")]
    assert f"{summary['local_test_accuracy']:.4f}" in lines[row("local_test_accuracy")]
    assert row("personal_test_accuracy") < row("local_test_accuracy") < row("test_accuracy")
    assert any(ln.startswith("On the parties' own test data, pooled: personal_") for ln in lines)
    assert lines[-1] == f"run directory: {out}"  # not wrapped, though longer than the table
    history = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    (ax,) = run_figures(history, "fedper")["accuracy.png"].axes
    shown = [ln.get_label() for ln in ax.get_lines()]
    assert shown[:2] == ["own models (parties' test data)", "global model (parties' test data)"]
    assert list(ax.get_lines()[0].get_ydata()) == [r["personal_accuracy_wmean"] for r in history]
    assert history[-1]["personal_accuracy_wmean"] == summary["personal_test_accuracy"]
    assert (out / "plots" / "accuracy.png").stat().st_size > 1000
