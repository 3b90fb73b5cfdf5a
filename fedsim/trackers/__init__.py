"""Experiment trackers: ``output.trackers: [mlflow, wandb, tensorboard]``.

One file per tracker (:mod:`.mlflow_tracker`, :mod:`.wandb_tracker`,
:mod:`.tensorboard_tracker`) behind the registry of :mod:`.base`, which finds them on
first use; a run's trackers together in :mod:`.run` (fed by the recorder's rows, never
the run's failure), a sweep's or tune's parent run and group in :mod:`.group`.
"""

from __future__ import annotations

from fedsim.trackers.base import (
    TRACKERS,
    TrackedRun,
    Tracker,
    TrackingContext,
    available,
    chosen,
    get,
    register,
    unregister,
)
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
    "unregister",
]
