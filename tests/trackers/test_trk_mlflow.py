"""MLflow: a run's per-round metrics read back by MLflow's own client, a sweep's runs
nested under its run, and one MLflow run across a kill and a resume."""

from __future__ import annotations

import json
import math

import pytest

import fedsim
from fedsim.rundir.store import read_jsonl
from fedsim.server.app import RunHooks

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'fedsim[mlflow]')")


def _client(root):
    return mlflow.MlflowClient(f"sqlite:///{root.resolve()}/mlflow.db")


def _numeric(row):
    return {
        k: v
        for k, v in row.items()
        if k != "round" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_mlflow_store_holds_the_metrics_of_metrics_jsonl(tiny, tmp_path):
    r = fedsim.run(tiny(federation={"rounds": 3}, output={"trackers": ["mlflow"], "plots": True}), out=tmp_path / "run")
    record = json.loads((r.run_dir / "trackers.json").read_text())["mlflow"]
    assert record["status"] == "finished"
    client = _client(r.run_dir)
    (run,) = client.search_runs([record["ids"]["experiment_id"]])
    assert run.info.run_id == record["ids"]["run_id"] and run.info.status == "FINISHED"
    rows = read_jsonl(r.run_dir / "metrics.jsonl")
    keys = set().union(*(_numeric(row) for row in rows))
    assert {"test_accuracy", "train_loss", "client_drift_mean", "round_time_s"} <= keys
    for key in keys:  # every scalar of every round, at step = round, once
        want = [(row["round"], _numeric(row)[key]) for row in rows if key in _numeric(row)]
        got = _history(client, run.info.run_id, key)
        assert [s for s, _ in got] == [s for s, _ in want], key
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-12), key
    # params: the flattened resolved config; the summary; the files
    assert run.data.params["train.lr"] == "0.1" and run.data.params["partition.scheme"] == "dirichlet"
    assert run.data.params["federation.rounds"] == "3"
    assert run.data.metrics["summary.best_test_accuracy"] == pytest.approx(r.summary["best_test_accuracy"])
    assert run.data.tags["fedsim.status"] == "finished"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "partition.json", "summary.json", "plots"} <= arts
    assert "model.pt" not in arts  # only with output.track_model
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/accuracy.png" in plots
    assert (r.run_dir / "mlartifacts").is_dir()  # beside the store, not in the working directory


def test_a_sweep_nests_its_runs_and_each_carries_its_status(tiny, tmp_path):
    spec = {
        "name": "nest",
        # lr 3 makes the loss explode in round 2: that run ends as diverged
        "base": tiny(federation={"rounds": 2}, train={"momentum": 0.9}, output={"trackers": ["mlflow"]}),
        "grid": {"train.lr": [0.01, 3.0]},
        "seeds": [0],
    }
    res = fedsim.sweep(spec, out=tmp_path / "sw")
    assert (res.n_finished, res.n_diverged) == (1, 1)
    client = _client(res.sweep_dir)
    runs = client.search_runs([client.get_experiment_by_name("fedsim").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.run_name == "sweep nest" and parent.info.status == "FINISHED"
    assert sorted(c.info.run_name for c in children) == ["lr=0.01__seed=0", "lr=3.0__seed=0"]
    assert len(runs) == 3
    by_name = {c.info.run_name: c for c in children}
    for row in res.rows:
        assert by_name[row["run"]].data.metrics["test_accuracy"] == pytest.approx(row["test_accuracy"])
        # the run's own status, as summary.json and summary.csv have it
        assert by_name[row["run"]].data.tags["fedsim.status"] == row["status"]
    assert by_name["lr=3.0__seed=0"].data.tags["fedsim.status"] == "diverged"
    assert parent.data.metrics["runs_finished"] == 1 and parent.data.metrics["runs_diverged"] == 1
    assert {"table.md", "summary.csv"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    # the runs' store is the sweep's: no database of their own
    assert not (res.sweep_dir / "lr=0.01__seed=0" / "mlflow.db").exists()


class Stop(KeyboardInterrupt):
    pass


def test_a_killed_and_resumed_run_keeps_one_mlflow_run(tiny, tmp_path):
    # checkpoints every 2 rounds: the kill after round 3 resumes from round 2 and
    # repeats round 3, which MLflow already holds and must not get twice
    cfg = tiny(federation={"rounds": 4}, output={"trackers": ["mlflow"], "checkpoint_every": 2})
    out = tmp_path / "run"

    def stop_after_3(row):
        if row["round"] == 3:
            raise Stop()

    with pytest.raises(Stop):
        fedsim.run(cfg, out=out, hooks=RunHooks(on_round=stop_after_3))
    record = json.loads((out / "trackers.json").read_text())["mlflow"]
    client = _client(out)
    assert client.get_run(record["ids"]["run_id"]).info.status == "KILLED"
    assert _history(client, record["ids"]["run_id"], "round_time_s")[-1][0] == 3

    r = fedsim.run(cfg, out=out, resume=True)
    after = json.loads((out / "trackers.json").read_text())["mlflow"]
    assert after["ids"]["run_id"] == record["ids"]["run_id"] and after["status"] == "finished"
    runs = client.search_runs([record["ids"]["experiment_id"]])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    rows = read_jsonl(out / "metrics.jsonl")
    got = _history(client, runs[0].info.run_id, "test_accuracy")
    assert got == [(row["round"], pytest.approx(row["test_accuracy"])) for row in rows]
    assert [s for s, _ in _history(client, runs[0].info.run_id, "train_loss")] == [1, 2, 3, 4]
    assert r.summary["rounds"] == 4


@pytest.mark.parametrize("uri", ["sqlite:///{missing}/x.db", "file://{missing}/mlruns"])
def test_a_store_in_a_missing_folder_is_refused_and_nothing_is_created(tiny, tmp_path, capsys, uri):
    """output.mlflow_uri=sqlite:////nonexistent/dir/x.db made /nonexistent/dir/ and its
    mlartifacts/: a tracker writes only where the user pointed, creating no folder."""
    import yaml

    from fedsim.cli import main

    missing = tmp_path / "missing" / "dir"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny(federation={"rounds": 1}, output={"trackers": ["mlflow"]})))
    given = uri.format(missing=missing)
    code = main(["run", str(cfg), f"output.mlflow_uri={given}", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"folder '{missing}' does not exist" in err[0], err
    assert not (tmp_path / "missing").exists() and not (tmp_path / "r").exists()


def test_a_tracking_uri_in_a_missing_folder_is_a_tracker_failure_that_creates_nothing(tiny, tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI is not the config: the run goes on without MLflow (a tracker's
    failure is a warning and a record), and MLflow never gets to create the folder."""
    missing = tmp_path / "missing" / "dir"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{missing}/x.db")
    res = fedsim.run(tiny(federation={"rounds": 1}, output={"trackers": ["mlflow"]}), out=tmp_path / "r")
    assert res.summary["rounds"] == 1 and not (tmp_path / "missing").exists()
    record = json.loads((tmp_path / "r" / "trackers.json").read_text())["mlflow"]
    assert record["status"] == "failed" and "does not exist" in json.dumps(record)
