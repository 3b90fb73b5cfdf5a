"""MLflow's handlers say what they did: a recorded MLflow run that cannot be reopened on
``--resume`` is a warning naming the tracker, the run and the error (a new MLflow run is
started, as before); a failure to create the experiment is only passed over where another
process created it first.

A fake client stands in for MLflow's (``client_for`` is replaced), so that each failure
is exactly the one under test and no store is created.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from fedsim.trackers import group, mlflow_tracker
from fedsim.trackers.base import TrackedRun, TrackingContext
from fedsim.trackers.run import TrackerRecord

MlflowException = pytest.importorskip(
    "mlflow.exceptions", reason="the mlflow extra is not installed (pip install 'fedsim[mlflow]')"
).MlflowException

URI = "sqlite:////nowhere/mlflow.db"


class FakeClient:
    """An MLflow client whose recorded run is gone: ``get_run`` fails, the rest succeeds."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def get_run(self, run_id: str):
        raise MlflowException(f"Run '{run_id}' not found")

    def get_experiment_by_name(self, name: str):
        return SimpleNamespace(experiment_id="7")

    def create_run(self, exp_id: str, run_name: str, tags: dict):
        self.created.append(run_name)
        return SimpleNamespace(info=SimpleNamespace(run_id="new"))

    def log_batch(self, *args, **kwargs) -> None:
        pass

    def set_tag(self, *args) -> None:
        pass


@pytest.fixture
def client(monkeypatch) -> FakeClient:
    fake = FakeClient()
    monkeypatch.setattr(mlflow_tracker, "client_for", lambda uri: fake)
    monkeypatch.setattr(group, "client_for", lambda uri: fake)
    return fake


def _output() -> SimpleNamespace:
    return SimpleNamespace(trackers=["mlflow"], tensorboard=False, mlflow_uri=URI, mlflow_experiment="fedsim")


def test_a_run_whose_mlflow_run_is_gone_warns_and_starts_a_new_one(client, tmp_path: Path, caplog):
    run = TrackedRun(
        tmp_path,
        "r",
        SimpleNamespace(output=_output()),
        {},
        [],
        TrackingContext(),
        {"run_id": "gone", "tracking_uri": URI},
    )
    with caplog.at_level(logging.WARNING, logger="fedsim.trackers"):
        ids = mlflow_tracker.MlflowTracker().start(run)
    assert ids["run_id"] == "new" and client.created == ["r"]
    (message,) = caplog.messages
    assert message.startswith("tracker mlflow cannot reopen the run's MLflow run gone (MlflowException:")
    assert "not found" in message and message.endswith("it starts a new one")


def test_a_sweep_whose_mlflow_run_is_gone_warns_and_starts_a_new_one(client, tmp_path: Path, caplog):
    TrackerRecord(tmp_path).started("mlflow", {"run_id": "gone", "tracking_uri": URI})
    with caplog.at_level(logging.WARNING, logger="fedsim.trackers"):
        tracking = group.GroupTracking(tmp_path, "sweep", "grid", _output())
    assert tracking.run_id == "new" and client.created == ["sweep grid"]
    (message,) = caplog.messages
    assert message.startswith("tracker mlflow cannot reopen the sweep's MLflow run gone (MlflowException:")


class RacingClient:
    """``create_experiment`` fails; the experiment exists afterwards only if ``raced``."""

    def __init__(self, error: Exception, raced: bool) -> None:
        self.error, self.raced, self.looked = error, raced, 0

    def get_experiment_by_name(self, name: str):
        self.looked += 1
        return SimpleNamespace(experiment_id="3") if self.raced and self.looked > 1 else None

    def create_experiment(self, name: str, artifact_location: str | None):
        raise self.error


def test_an_experiment_another_process_created_first_is_used():
    client = RacingClient(MlflowException("already exists"), raced=True)
    assert mlflow_tracker.experiment_id(client, "fedsim", URI) == "3"


@pytest.mark.parametrize(
    "error, raced",
    [(MlflowException("database is read-only"), False), (TypeError("a bug, not MLflow's store"), True)],
)
def test_any_other_failure_to_create_the_experiment_is_raised(error, raced):
    with pytest.raises(type(error)):
        mlflow_tracker.experiment_id(RacingClient(error, raced), "fedsim", URI)
