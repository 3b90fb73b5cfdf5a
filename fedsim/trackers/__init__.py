"""Experiment trackers: ``output.trackers: [mlflow, wandb, tensorboard]``.

One file per tracker (:mod:`.mlflow_tracker`, :mod:`.wandb_tracker`,
:mod:`.tensorboard_tracker`) behind the registry of :mod:`.base`; a run's trackers
together in :mod:`.run` (fed by the recorder's rows, never the run's failure), a
sweep's or tune's parent run and group in :mod:`.group`.
"""

from __future__ import annotations

from fedsim.trackers import mlflow_tracker, tensorboard_tracker, wandb_tracker  # noqa: F401  (registration)
from fedsim.trackers.base import TRACKERS, TrackedRun, Tracker, TrackingContext, available, chosen, get, register
from fedsim.trackers.group import GroupTracking
from fedsim.trackers.run import RECORD, RunTrackers

__all__ = [
    "RECORD",
    "TRACKERS",
    "GroupTracking",
    "RunTrackers",
    "TrackedRun",
    "Tracker",
    "TrackingContext",
    "available",
    "chosen",
    "get",
    "register",
]
