"""Experiment trackers: ``output.trackers: [mlflow, wandb, tensorboard]``.

One file per tracker (:mod:`.mlflow_tracker`, :mod:`.wandb_tracker`,
:mod:`.tensorboard_tracker`) behind the registry of :mod:`.base`; a run's trackers
together in :mod:`.run` (fed by the recorder's rows, never the run's failure), a
sweep's or tune's parent run and group in :mod:`.group`.
"""

from __future__ import annotations

from . import mlflow_tracker, tensorboard_tracker, wandb_tracker  # noqa: F401  (registration)
from .base import TRACKERS, TrackedRun, Tracker, TrackingContext, available, chosen, get, register
from .group import GroupTracking
from .run import RECORD, RunTrackers

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
