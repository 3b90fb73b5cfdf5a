"""A tracker that fails is a warning and a record in the run, never a lost run; the
trackers' config keys are checked like every other key."""

from __future__ import annotations

import json
import logging

import pytest

import fedsim
from fedsim import trackers
from fedsim.cli import main
from fedsim.errors import ConfigError
from fedsim.trackers.base import TRACKERS, Tracker


class Flaky(Tracker):
    """Fails in round 2, as a full disk or a dropped connection would."""

    name = "flaky"
    module = "json"
    rows: list = []

    def start(self, run):
        return {"started": True}

    def log_round(self, row):
        if row["round"] == 2:
            raise OSError(28, "No space left on device")
        Flaky.rows.append(row["round"])


@pytest.fixture
def flaky():
    TRACKERS.register(Flaky)
    Flaky.rows = []
    yield Flaky
    TRACKERS.unregister("flaky")


def test_a_tracker_failing_mid_run_is_a_warning_and_a_record(tiny, tmp_path, flaky, caplog):
    with caplog.at_level(logging.WARNING, logger="fedsim.trackers"):
        r = fedsim.run(tiny(federation={"rounds": 3}, output={"trackers": ["flaky"]}), out=tmp_path / "run")
    assert r.summary["status"] == "finished" and r.summary["rounds"] == 3
    assert flaky.rows == [1]  # dropped after its failure, for the rest of the run
    record = json.loads((r.run_dir / "trackers.json").read_text())["flaky"]
    assert record["status"] == "failed"
    (failure,) = record["failures"]
    assert failure["where"] == "round 2" and "No space left" in failure["error"]
    assert any("tracker flaky failed (round 2)" in m for m in caplog.messages)


def test_an_unreachable_mlflow_server_leaves_the_run_complete(tiny, tmp_path, monkeypatch, caplog):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'fedsim[mlflow]')")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    # port 9 on the loopback: nothing listens there, the connection is refused at once
    cfg = tiny(output={"trackers": ["mlflow"], "mlflow_uri": "http://127.0.0.1:9"})
    with caplog.at_level(logging.WARNING, logger="fedsim.trackers"):
        r = fedsim.run(cfg, out=tmp_path / "run")
    assert r.summary["status"] == "finished" and (r.run_dir / "summary.json").exists()
    assert (r.run_dir / "model.pt").exists()
    record = json.loads((r.run_dir / "trackers.json").read_text())["mlflow"]
    assert record["status"] == "failed" and record["failures"][0]["where"] == "start"
    assert any("tracker mlflow failed (start)" in m for m in caplog.messages)
    assert not (r.run_dir / "mlflow.db").exists()  # the named server, not a local fallback


def test_tensorboard_is_a_tracker_too(tiny, tmp_path):
    pytest.importorskip(
        "tensorboard", reason="the tensorboard extra is not installed (pip install 'fedsim[tensorboard]')"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = fedsim.run(tiny(output={"trackers": ["tensorboard"]}), out=tmp_path / "tb")
    acc = EventAccumulator(str(r.run_dir / "tensorboard"))
    acc.Reload()
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("test_accuracy")] == [
        (row["round"], round(row["test_accuracy"], 6)) for row in r.history
    ]


@pytest.mark.parametrize(
    "output, message",
    [
        ({"trackers": ["mlfow"]}, "did you mean 'mlflow'"),
        ({"trackers": ["mlflow", "mlflow"]}, "names mlflow twice"),
        ({"mlflow_uri": "sqlite:///x.db"}, "output.mlflow_uri' is read only with output.trackers containing mlflow"),
        ({"trackers": ["mlflow"], "wandb_project": "p"}, "output.wandb_project"),
        ({"track_model": True}, "output.track_model"),
    ],
)
def test_tracker_keys_are_checked(tiny, output, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fedsim.load_config(tiny(output=output))


def test_a_missing_tracker_library_is_one_line_and_exit_2(tiny, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(tiny(output={"trackers": ["wandb"]})))
    assert main(["run", str(cfg), "--out", str(tmp_path / "never"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fedsim: error: output.trackers: wandb needs wandb: pip install 'fedsim[wandb]'"]
    assert not (tmp_path / "never").exists()


def test_the_registry_lists_the_trackers():
    assert {"mlflow", "wandb", "tensorboard"} <= set(trackers.available())
