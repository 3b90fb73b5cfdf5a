"""fedsim tune: Optuna over a toy problem, pruning, a kill and a resume, selection that
never reads the test set, and bad tune files as one line with exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import fedsim
import fedsim.tuning as tune_pkg
import fedsim.tuning.trials as trials_mod
from fedsim.cli import main
from fedsim.errors import RunDirError
from fedsim.server.evaluation import CentralEvaluator

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed (pip install 'fedsim[tune]')")


class Kill(KeyboardInterrupt):
    """Stands for a kill of the tune process (a BaseException: nothing catches it)."""


@pytest.fixture
def toy(tiny):
    """A toy problem where the learning rate decides: lr ~1e-4 stays at chance (25%) in 4
    rounds, lr ~0.1 reaches 90% and more. IID, 800 samples, a quarter held out per party."""

    def make(**extra):
        spec = {
            "name": "toy",
            "base": tiny(partition={"scheme": "iid"}, data={"n_train": 800}, federation={"rounds": 4}),
            "overrides": ["data.val_fraction=0.25", "federation.fraction_evaluate=1.0"],
            "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}},
            "n_trials": 8,
            "seed": 2,
            "pruner": {"type": "median", "n_startup_trials": 2},
            "seeds": [0],
        }
        spec.update(extra)
        return spec

    return make


@pytest.fixture
def timeline(monkeypatch):
    """Every central evaluation (the only reader of the evaluation set) and the moment the
    chosen setting's final runs start, in order."""
    events: list[tuple] = []
    real_eval = CentralEvaluator.__call__

    def evaluate(self, state):
        events.append(("evaluate", self.cfg.data.cv_folds))
        return real_eval(self, state)

    real_sweep = tune_pkg.sweep

    def final_sweep(spec, **kw):
        events.append(("final", dict(spec["grid"])))
        return real_sweep(spec, **kw)

    monkeypatch.setattr(CentralEvaluator, "__call__", evaluate)
    monkeypatch.setattr(tune_pkg, "sweep", final_sweep)
    return events


def test_toy_tune_finds_the_better_lr_prunes_and_resumes_after_a_kill(toy, tmp_path, monkeypatch, timeline):
    calls: list[tuple] = []
    real_run = trials_mod.run
    killed = []

    def run(config, out=None, *, resume=False, hooks=None, tracking=None):
        name = out.rsplit("/", 1)[-1]
        on_round, starts = hooks.on_round, []

        def round_hook(row):
            if name == "trial-0005" and row["round"] == 2 and not killed:
                killed.append(row["round"])
                raise Kill()  # after round 2's checkpoint: the tune process dies here
            on_round(row)

        hooks.on_round = round_hook
        on_start = hooks.on_start

        def start_hook(start, rounds):
            starts.append(start)
            on_start(start, rounds)

        hooks.on_start = start_hook
        calls.append((name, resume, starts))
        return real_run(config, out=out, resume=resume, hooks=hooks, tracking=tracking)

    monkeypatch.setattr(trials_mod, "run", run)
    out = tmp_path / "tune"
    with pytest.raises(Kill):
        fedsim.tune(toy(), out=out)
    before = json.loads((out / "tune.json").read_text())["trials"]
    assert [(t["number"], t["state"]) for t in before][-1] == (5, "RUNNING")
    finished = {t["number"]: t for t in before if t["state"] != "RUNNING"}
    assert sorted(finished) == [0, 1, 2, 3, 4]
    assert timeline == []  # nothing evaluated centrally while tuning by local validation

    calls.clear()
    result = fedsim.tune(toy(), out=out, resume=True)
    # the finished trials are not repeated; the killed one continues from its checkpoint
    assert [c[0] for c in calls] == [f"trial-{n:04d}" for n in range(5, 8)]
    assert calls[0][1] is True and calls[0][2] == [3]
    after = {t["number"]: t for t in result.trials}
    assert len(after) == 8 and all(after[n]["value"] == finished[n]["value"] for n in finished)

    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{out}/study.db")
    assert len(study.trials) == 8
    states = [t.state.name for t in study.trials]
    assert states.count("PRUNED") >= 1 and states.count("COMPLETE") >= 2
    assert sorted(study.trials[5].intermediate_values) == [1, 2, 3, 4]  # rounds 1-2 before the kill, 3-4 after
    # the better learning rate: the chance-level trials sit at lr < 0.01, the chosen one learns
    best = result.best_params["train.lr"]
    assert best > 0.03 and result.best_value > 0.8
    low = [t.value for t in study.trials if t.params["train.lr"] < 0.005 and t.value is not None]
    assert low and max(low) < 0.35
    assert result.best_value == max(t.value for t in study.trials if t.state.name == "COMPLETE")

    # the test set is read only after the choice, by the chosen setting's runs
    assert timeline[0] == ("final", {"train.lr": [best]})
    assert [e for e in timeline[1:] if e[0] == "final"] == []
    assert len(timeline) > 1 and all(e == ("evaluate", 0) for e in timeline[1:])
    final_cfg = yaml.safe_load((out / "final" / f"lr={best!r}__seed=0" / "config.yaml").read_text())
    assert final_cfg["data"]["val_fraction"] == 0.0 and final_cfg["federation"]["fraction_evaluate"] == 0.0
    assert final_cfg["federation"]["eval_every"] == 4  # tested once, after the last round
    assert len(timeline) == 2
    summary = json.loads((out / "final" / f"lr={best!r}__seed=0" / "summary.json").read_text())
    assert result.test_mean == pytest.approx(summary["test_accuracy"])
    for name in ("trial-0000", "trial-0007"):
        cfg = yaml.safe_load((out / "trials" / name / "config.yaml").read_text())
        assert cfg["federation"]["eval_every"] == 0 and cfg["data"]["val_fraction"] == 0.25

    md = (out / "tune.md").read_text()
    assert f"trial {result.best_number}" in md and f"{100 * result.test_mean:.2f}" in md
    assert (out / "figures" / "optimization_history.png").stat().st_size > 0
    assert (out / "figures" / "param_importances.png").stat().st_size > 0
    assert len((out / "trials.csv").read_text().splitlines()) == 9

    # a resume of a finished tune changes nothing; a changed space is refused
    calls.clear()
    again = fedsim.tune(toy(), out=out, resume=True)
    assert calls == [] and again.best_params == result.best_params and again.test_mean == result.test_mean
    changed = toy(space={"train.lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True}})
    with pytest.raises(RunDirError, match="differs .* in space"):
        fedsim.tune(changed, out=out, resume=True)


@pytest.mark.slow  # the K-fold path itself is in the default run: test_wf_selection.py
def test_kfold_tune_reads_only_training_folds_and_nests_its_runs(toy, tmp_path, timeline):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'fedsim[mlflow]')")
    spec = toy(
        overrides=["federation.rounds=2", "output.trackers=[mlflow]"],
        space={"train.lr": {"type": "categorical", "choices": [1e-4, 0.2]}},
        n_trials=2,
        folds=2,
        pruner="none",
        sampler="random",
    )
    result = fedsim.tune(spec, out=tmp_path / "cv")
    out = result.tune_dir
    assert result.best_params == {"train.lr": 0.2}
    entries = {t["number"]: t for t in result.trials}
    for t in result.trials:  # a trial's value is the mean held-out-fold accuracy of its two runs
        assert t["runs"] == [f"trials/trial-{t['number']:04d}-fold{i}" for i in (0, 1)]
        accs = [json.loads((out / r / "summary.json").read_text())["test_accuracy"] for r in t["runs"]]
        assert t["value"] == pytest.approx(sum(accs) / 2)
        assert [yaml.safe_load((out / r / "config.yaml").read_text())["data"]["cv_fold"] for r in t["runs"]] == [0, 1]
    assert len(entries) == 2
    # during tuning every evaluation is of a held-out training fold; the test set comes after the choice
    i = timeline.index(("final", {"train.lr": [0.2]}))
    assert i > 0 and all(e == ("evaluate", 2) for e in timeline[:i])
    assert timeline[i + 1 :] == [("evaluate", 0)]

    client = mlflow.MlflowClient(f"sqlite:///{out.resolve()}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("fedsim").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    tune_run = by_name["tune toy"]
    final_sweep = by_name["sweep toy-final"]
    assert final_sweep.data.tags["mlflow.parentRunId"] == tune_run.info.run_id
    trial_runs = [r for r in runs if r.info.run_name.startswith("trial-")]
    assert len(trial_runs) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == tune_run.info.run_id for r in trial_runs)
    (final_run,) = [r for r in runs if r.info.run_name.startswith("lr=")]
    assert final_run.data.tags["mlflow.parentRunId"] == final_sweep.info.run_id
    assert tune_run.data.metrics["test_accuracy_mean"] == pytest.approx(result.test_mean)
    assert "tune.md" in {a.path for a in client.list_artifacts(tune_run.info.run_id)}


def test_a_final_run_stopped_by_the_privacy_budget_is_tested(toy, tmp_path):
    """The final runs evaluate only at federation.rounds; one stopped earlier by
    privacy.target_epsilon is still tested (tune.md showed "-" with exit 0)."""
    pytest.importorskip("dp_accounting", reason="pip install 'fedsim[privacy]'")
    from fedsim.privacy.accounting import default_delta, epsilon

    target = (epsilon([(1.0, 1.0, 2)], default_delta(4)) + epsilon([(1.0, 1.0, 3)], default_delta(4))) / 2
    spec = toy(
        overrides=[*toy()["overrides"], "privacy.mode=central-fixed", f"privacy.target_epsilon={target}"],
        space={"train.lr": {"type": "categorical", "choices": [0.05, 0.1]}},
        n_trials=1,
        pruner="none",
        sampler="random",
    )
    result = fedsim.tune(spec, out=tmp_path / "t")
    final = next((tmp_path / "t" / "final").glob("*/summary.json"))
    summary = json.loads(final.read_text())
    assert summary["status"] == "stopped" and summary["rounds"] == 2 and summary["test_accuracy"] is not None
    assert result.test_mean == summary["test_accuracy"] and result.n_final_failed == 0
    assert f"{100 * summary['test_accuracy']:.2f}" in result.markdown


@pytest.mark.parametrize(
    "raw, high",
    [
        ({"type": "int", "low": 1, "high": 10, "step": 4}, 9),
        ({"type": "float", "low": 0.1, "high": 0.5, "step": 0.3}, 0.4),
    ],
)
def test_a_range_that_is_not_whole_steps_is_lowered_with_one_warning(toy, caplog, raw, high):
    """Optuna lowers high itself, with a two-line UserWarning of its own; fedsim says it in one."""
    import warnings

    from fedsim.tuning import parse_tune

    key = "train.epochs" if raw["type"] == "int" else "train.lr"
    with caplog.at_level("WARNING", logger="fedsim.tuning.spec"), warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna's own warning would fail here
        spec = parse_tune(toy(space={key: raw}))
        (param,) = spec.space
        dist = param.distribution()
    assert param.high == high and dist.high == high and type(param.high) is type(high)
    (message,) = [m for m in caplog.messages if key in m]
    assert f"values are drawn from [{raw['low']:g}, {high:g}]" in message


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return False
    return "zombie" not in state.lower()


def test_a_stopped_tune_terminates_its_workers_before_leaving_the_pool(monkeypatch):
    """Ctrl-C or SIGTERM while trials run: the pool is shut down without waiting and its
    workers are terminated before the pool's `with` block ends (which would wait for
    every running trial). The end-to-end version with real processes is marked slow."""
    from concurrent.futures import Future

    events: list[tuple] = []

    class Worker:
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def terminate(self) -> None:
            events.append(("terminate", self.pid))

    class Pool:
        def __init__(self, *args, **kwargs) -> None:
            self._processes = {11: Worker(11), 12: Worker(12)}

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> bool:
            events.append(("leave the pool",))
            return False

        def submit(self, fn, job) -> Future:
            return Future()

        def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
            events.append(("shutdown", wait, cancel_futures))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # SIGTERM is KeyboardInterrupt in the CLI (Terminated)

    monkeypatch.setattr(trials_mod, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(trials_mod, "wait", interrupted)
    jobs = iter(["trial 0", "trial 1"])
    with pytest.raises(KeyboardInterrupt):
        trials_mod.execute_trials(lambda: next(jobs, None), lambda job: None, workers=2)
    assert events == [("shutdown", False, True), ("terminate", 11), ("terminate", 12), ("leave the pool",)]


@pytest.mark.slow  # spawns a tune and its two workers; the fast version is above
def test_sigterm_stops_the_running_trials_at_once(toy, tmp_path):
    """SIGTERM to `fedsim tune --workers 2` (a scheduler's preemption) stops its running
    trials now: they continue from their checkpoints on --resume. The pool was shut down
    without waiting and the `with` block then waited: workers wrote summaries 10 s later."""
    spec = toy(base={**toy()["base"], "federation": {"rounds": 1000}}, n_trials=2, pruner="none")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "t"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "fedsim.cli", "tune", str(path), "--out", str(out), "--workers", "2", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 180
        rows = [out / "trials" / f"trial-000{i}" / "metrics.jsonl" for i in (0, 1)]
        while time.time() < deadline and not all(r.exists() and r.stat().st_size for r in rows):
            time.sleep(0.2)  # both workers are training
        assert proc.poll() is None, proc.stderr.read()
        workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        stopped = time.time() - t0
        assert proc.returncode == 143 and err.strip().splitlines()[-1].startswith("fedsim: terminated (SIGTERM)")
        assert stopped < 5, f"the tune took {stopped:.1f} s to stop"
        time.sleep(1)
        assert not [w for w in workers if _alive(w)]
        sizes = [r.stat().st_size for r in rows]
        time.sleep(1)
        assert [r.stat().st_size for r in rows] == sizes  # nothing writes on
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"space": {"train.lrr": {"type": "float", "low": 0.01, "high": 0.1}}}, "unknown config key 'train.lrr'"),
        ({"space": {"train.lr": {"type": "float", "low": 0.1, "high": 0.01}}}, "is empty"),
        ({"space": {"train.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}}, "log range needs low > 0"),
        ({"space": {"train.lr": {"type": "categorical", "choices": []}}}, "non-empty list"),
        ({"space": {"train.lr": {"type": "float", "low": 0.01, "high": 0.1, "lg": True}}}, "'lg' is not a key"),
        ({"space": {"strategy.mu": {"type": "float", "low": 0.01, "high": 0.1}}}, "strategy 'fedavg' has no parameter"),
        (
            {"space": {"train.lr": {"type": "float", "low": 0.01, "high": 2.0}}, "overrides": ["train.lr=0.1"]},
            "also set",
        ),
        ({"select_by": "test_accuracy"}, "not a validation metric"),
        ({"overrides": []}, "needs local validation"),
        ({"n_trial": 3}, "unknown tune key 'n_trial' (did you mean 'n_trials'?)"),
        (
            {"space": {"train.epochs": {"type": "int", "low": 1, "high": 2, "step": 5}}},
            "step 5 is wider than the range [1, 2], which leaves only 1",
        ),
        ({"pruner": {"type": "median", "startup": 3}}, "MedianPruner has no argument 'startup'"),
    ],
)
def test_bad_tune_files_are_one_line_and_exit_2(toy, tmp_path, capsys, change, message):
    spec = toy(**change)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["tune", str(path), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "never").exists()


def test_tune_md_marks_a_final_test_mean_that_includes_a_diverged_run(toy):
    from fedsim.tuning.report import tune_markdown
    from fedsim.tuning.spec import parse_tune

    spec = parse_tune(toy())
    best = {"number": 3, "value": 0.9, "params": {"train.lr": 0.1}}
    final = {
        "dir": "final",
        "seeds": [0, 1],
        "per_seed": [(0, 0.9), (1, 0.25)],
        "diverged": [1],
        "test_mean": 0.575,
        "test_std": 0.46,
        "what": "no validation split",
        "rounds": 4,
        "grid_label": "lr0.1",
    }
    md = tune_markdown(spec, [], best, final, {})
    assert "**57.50 ± 46.00** † (1 diverged) (mean ± sample std; seed 0: 90.00, seed 1: 25.00 †)" in md
    assert "† the training of these seeds' runs diverged" in md
