"""The tracker extension point: a :class:`Tracker` base class and its registry.

A tracker mirrors a run into an experiment tracker (MLflow, Weights & Biases,
TensorBoard): it is started once per run with the rows already recorded (a resumed run
continues where the tracker stopped), receives every ``metrics.jsonl`` row as it is
written, and ends with the summary and the run's files. One file per tracker in
:mod:`fedsim.trackers` (found on first use: no import line anywhere), decorated with
:func:`register`; its library is imported inside its methods, so that choosing trackers
costs nothing until a run uses them. A tracker is a plug-in of fedsim's one mechanism
(:mod:`fedsim.util.plugins`): its keys of its own are ``output.*`` keys, declared in
its ``Params`` (a subclass of :class:`fedsim.schema.sections.OutputConfig`).

Whatever a tracker raises is the tracker's failure, not the run's
(:class:`fedsim.trackers.run.RunTrackers` turns it into a warning and a record).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.schema.sections import OutputConfig
from fedsim.util.plugins import Plugin, Registry
from fedsim.util.trees import flatten


@dataclass(frozen=True)
class TrackingContext:
    """Where a run belongs when a sweep or a tune started it (picklable: it travels to
    the sweep's worker processes and, inside :class:`fedsim.inputs.run_inputs.RunSettings`, to
    the server).

    ``mlflow_uri`` is the store of the group (the sweep's ``mlflow.db``), used when
    neither ``output.mlflow_uri`` nor ``MLFLOW_TRACKING_URI`` names one;
    ``mlflow_parent_run_id`` nests the run under the group's MLflow run; ``group`` is
    the W&B group; ``job_type`` the W&B job type (run, trial, final); ``run_name`` the
    name shown in the trackers (default: the run directory's name).
    """

    mlflow_uri: str | None = None
    mlflow_parent_run_id: str | None = None
    group: str | None = None
    job_type: str | None = None
    run_name: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


@dataclass
class TrackedRun:
    """What a tracker is started with."""

    run_dir: Path
    name: str
    config: Any  # the validated ExperimentConfig
    params: dict[str, Any]  # the flattened resolved config (dotted keys)
    history: list[dict]  # the rows already recorded (a resumed run's checkpoint history)
    context: TrackingContext
    state: dict[str, Any] = field(default_factory=dict)  # this tracker's record in trackers.json (ids)


class Tracker(Plugin):
    """One tracker of one run. Subclasses set ``name``, ``summary``, ``paper``, ``extra``
    (the pip extra), ``module`` (the library whose absence is a config error before the
    run starts) and, for ``output.*`` keys of their own, ``Params``. The registry keeps
    one instance for its declarations; every run gets a new one."""

    name: str = ""
    extra: str = ""
    module: str = ""
    Params: type = OutputConfig

    def start(self, run: TrackedRun) -> dict[str, Any]:
        """Open (or, from ``run.state``, reopen) the tracker's run and log what
        ``run.history`` holds that the tracker lacks; returns the ids to keep in
        ``trackers.json`` for a resume."""
        raise NotImplementedError

    def log_round(self, row: Mapping[str, Any]) -> None:
        """One ``metrics.jsonl`` row (``row["round"]`` is the step)."""
        raise NotImplementedError

    def finish(self, summary: Mapping[str, Any], files: Iterable[Path]) -> None:
        """The run ended: its summary and its files (config.yaml, partition.json, plots, ...)."""

    def end(self, status: str) -> None:
        """The run stopped without a summary (``failed`` or ``killed``): close what is open."""


#: the trackers: the modules of fedsim/trackers (sorted by name)
TRACKERS: Registry[Tracker] = Registry(
    "tracker", "fedsim.trackers", section="output", chooser="trackers", base=OutputConfig
)


def register(cls: type[Tracker]) -> type[Tracker]:
    """Class decorator: make a tracker available to ``output.trackers``."""
    return TRACKERS.register(cls)


def unregister(name: str) -> None:
    """Remove a tracker (tests that register their own)."""
    TRACKERS.unregister(name)


def available() -> list[str]:
    return TRACKERS.available()


def get(name: str) -> type[Tracker]:
    """The class of tracker ``name`` (a run makes its own instance)."""
    return type(TRACKERS.get(name))


def chosen(output: Any) -> list[str]:
    """The trackers a run's ``output`` section asks for (``output.tensorboard: true`` is
    ``tensorboard`` in ``output.trackers``), in the order given."""
    names = list(output.trackers)
    if output.tensorboard and "tensorboard" not in names:
        names.append("tensorboard")
    return names


# ----------------------------------------------------------------- helpers


def config_params(cfg: Any) -> dict[str, Any]:
    """The resolved config as dotted keys (the dataclass tree of ExperimentConfig)."""
    return flatten(dataclasses.asdict(cfg))


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool: what trackers take as a metric."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def round_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric scalars of a metrics row, without ``round`` (the step)."""
    return {k: float(v) for k, v in row.items() if k != "round" and is_number(v)}


def summary_values(summary: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """(numbers, strings) of a summary, flattened (``heterogeneity.tv_mean``)."""
    flat = flatten(summary)
    numbers = {k: float(v) for k, v in flat.items() if is_number(v)}
    strings = {k: str(v) for k, v in flat.items() if isinstance(v, str)}
    return numbers, strings


def run_files(run_dir: Path, with_model: bool) -> list[Path]:
    """The files a run hands its trackers: config, partition, summary, plots (and the model)."""
    names = ["config.yaml", "partition.json", "summary.json"] + (["model.pt"] if with_model else [])
    files = [run_dir / n for n in names if (run_dir / n).exists()]
    plots = run_dir / "plots"
    if plots.is_dir():
        files += sorted(plots.glob("*.png"))
    return files
