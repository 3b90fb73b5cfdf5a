"""MLflow: a run per fedsim run, nested under its sweep's or tune's run.

Params are the flattened resolved config (``train.lr``), metrics every
``metrics.jsonl`` scalar with ``step=round``, the summary's numbers as metrics and its
strings as tags, and the files as artifacts (``config.yaml``, ``partition.json``,
``summary.json``, the plots; ``model.pt`` with ``output.track_model``).

The store is ``output.mlflow_uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite
database beside the run: the sweep's or tune's ``mlflow.db`` for their runs, the run's
own ``mlflow.db`` otherwise (a real database: ``mlflow ui --backend-store-uri
sqlite:///RUN_DIR/mlflow.db`` or ``MlflowClient`` query it), with artifacts in
``mlartifacts/`` beside it. The run id is kept in ``trackers.json``: a resumed fedsim
run continues the same MLflow run, and logs only the rounds MLflow does not have yet
(a resumed run repeats the rounds after its checkpoint exactly, so they are already
there).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fedsim.schema.sections import OutputConfig
from fedsim.trackers.base import TrackedRun, Tracker, register, round_metrics, summary_values
from fedsim.trackers.run import one_line
from fedsim.util.params import hp

log = logging.getLogger(__name__)

#: a metric every recorded round has: its history says which rounds MLflow holds
ROUND_MARKER = "round_time_s"
#: MLflow's limit of metrics, params or tags in one log_batch call
BATCH = 1000
#: MLflow's limit of a param value's length (6000 in MLflow 2, 8000 in 3)
PARAM_CHARS = 6000


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def resolve_uri(configured: str | None, context_uri: str | None, run_dir: Path) -> str:
    """``output.mlflow_uri`` > ``MLFLOW_TRACKING_URI`` > the group's store > the run's ``mlflow.db``."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or context_uri or sqlite_uri(run_dir / "mlflow.db")


def artifact_root(uri: str) -> str | None:
    """``mlartifacts/`` beside a local SQLite store (MLflow's own default is relative to
    the working directory); None for a server, whose experiments have their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return None


def missing_folder(uri: str) -> Path | None:
    """The folder a local store at ``uri`` needs and that does not exist, or None.

    MLflow creates whatever a local store's path lacks (``sqlite:////nonexistent/dir/x.db``
    made ``/nonexistent/dir/`` and its ``mlartifacts/``): fedsim writes only where the user
    pointed, so the folder that holds a SQLite database, or the parent of a file store's
    root (the root itself is the target), must exist. Servers (http, databricks, ...)
    are not checked."""
    if uri.startswith("sqlite:"):
        rest = uri[len("sqlite:") :]
        if not rest.startswith("///") or rest == "///" or rest.startswith("///:memory:"):
            return None
        folder = Path(rest[3:]).expanduser().absolute().parent
    else:
        parsed = urlparse(uri)
        if parsed.scheme not in ("", "file") or (parsed.scheme == "" and ":" in uri.split("/")[0]):
            return None
        folder = Path(parsed.path if parsed.scheme == "file" else uri).expanduser().absolute().parent
    return None if folder.is_dir() else folder


def check_store(uri: str, where: str) -> None:
    """ValueError naming ``where`` when a local store's folder does not exist (:func:`missing_folder`)."""
    folder = missing_folder(uri)
    if folder is not None:
        raise ValueError(
            f"{where} '{uri}': folder '{folder}' does not exist; create it or point the store elsewhere "
            "(fedsim creates no folder outside the run directory and the store)"
        )


def quiet_mlflow() -> None:
    """MLflow logs the creation of a database's tables at INFO; fedsim's CLI shows warnings only."""
    for name in ("mlflow", "alembic"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def client_for(uri: str):
    """An ``MlflowClient`` on ``uri`` (MLflow imported here: it is an optional extra);
    never on a local store whose folder is missing (MLflow would create it)."""
    check_store(uri, "the MLflow store")
    quiet_mlflow()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(client, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (artifacts beside a local store) if missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=artifact_root(uri))
    except MlflowException:
        # MLflow's stores raise every error as an MlflowException (the SQL store wraps
        # SQLAlchemy's, a lock included); the expected one is that another process of the
        # sweep created the experiment first, which the look-up proves, else it is raised
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class MlflowParams(OutputConfig):
    """``output.*`` with ``mlflow`` among the trackers: the common keys and MLflow's own."""

    mlflow_uri: str | None = hp(
        None,
        help="MLflow's store; null = MLFLOW_TRACKING_URI, else a SQLite database in the sweep or run directory",
        source="MLflow's own resolution first",
        text="an MLflow tracking URI",
    )
    mlflow_experiment: str = hp("fedsim", help="the MLflow experiment of the runs", source="-")
    track_model: bool = hp(False, help="model.pt among the files handed to MLflow / W&B", source="-")


@register
class MlflowTracker(Tracker):
    name = "mlflow"
    summary = "a run per fedsim run: the config as params, every metrics.jsonl scalar, the summary, the files"
    paper = "MLflow (Zaharia et al. 2018); pip install 'fedsim[mlflow]'"
    extra = "mlflow"
    module = "mlflow"
    Params = MlflowParams

    def check(self, cfg: Any) -> str | None:
        out = cfg.output
        if out.mlflow_uri:
            try:
                check_store(out.mlflow_uri, "config key 'output.mlflow_uri' =")
            except ValueError as exc:
                return str(exc)
        if not out.mlflow_experiment:
            return "config key 'output.mlflow_experiment' must be a non-empty name"
        return None

    def start(self, run: TrackedRun) -> dict[str, Any]:
        from mlflow.entities import Param, RunStatus

        out = run.config.output
        self.uri = resolve_uri(out.mlflow_uri, run.context.mlflow_uri, run.run_dir)
        self.client = client = client_for(self.uri)
        run_id = run.state.get("run_id") if run.state.get("tracking_uri") == self.uri else None
        existing = None
        if run_id:
            try:
                existing = client.get_run(run_id)
            except Exception as exc:  # deleted from the store, or unreadable: start a new MLflow run
                log.warning(
                    "tracker mlflow cannot reopen the run's MLflow run %s (%s); it starts a new one",
                    run_id,
                    one_line(exc),
                )
                existing = None
        if existing is None:
            exp_id = experiment_id(client, out.mlflow_experiment, self.uri)
            tags = {"fedsim.run_dir": str(run.run_dir.resolve()), **dict(run.context.tags)}
            if run.context.mlflow_parent_run_id:
                tags["mlflow.parentRunId"] = run.context.mlflow_parent_run_id
            created = client.create_run(exp_id, run_name=run.name, tags=tags)
            self.run_id = created.info.run_id
            have_params: dict[str, str] = {}
        else:
            self.run_id = existing.info.run_id
            exp_id = existing.info.experiment_id
            have_params = dict(existing.data.params)
            client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        # params are immutable in MLflow: a resume logs the new ones; a value it changed
        # (federation.rounds raised to train on, an output key) becomes a tag
        params = {k: str(v)[:PARAM_CHARS] for k, v in run.params.items()}
        new = [Param(k, v) for k, v in params.items() if k not in have_params]
        changed = {f"resumed.{k}": v for k, v in params.items() if k in have_params and have_params[k] != v}
        for i in range(0, len(new), BATCH):
            client.log_batch(self.run_id, params=new[i : i + BATCH])
        for k, v in changed.items():
            client.set_tag(self.run_id, k, v)
        steps = [m.step for m in client.get_metric_history(self.run_id, ROUND_MARKER)] if existing else []
        self.logged_through = max(steps, default=0)
        for row in run.history:
            self.log_round(row)
        return {"run_id": self.run_id, "experiment_id": exp_id, "tracking_uri": self.uri}

    def log_round(self, row: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        step = int(row["round"])
        if step <= self.logged_through or row.get("aborted"):
            return
        ts = now_ms()
        metrics = [Metric(k, v, ts, step) for k, v in round_metrics(row).items()]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + BATCH])
        self.logged_through = step

    def finish(self, summary: Mapping[str, Any], files: Iterable[Path]) -> None:
        from mlflow.entities import Metric, RunTag

        numbers, strings = summary_values(summary)
        step = int(summary.get("rounds") or 0)
        ts = now_ms()
        # the final round's values are already there under their own keys; the rest of
        # the summary (best round, totals, heterogeneity) goes in under summary.*
        metrics = [Metric(f"summary.{k}", v, ts, step) for k, v in numbers.items()]
        tags = [RunTag(f"fedsim.{k}", v[:5000]) for k, v in strings.items()]
        for i in range(0, max(len(metrics), len(tags)), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + BATCH], tags=tags[i : i + BATCH])
        for f in files:
            self.client.log_artifact(self.run_id, str(f), artifact_path="plots" if f.parent.name == "plots" else None)
        self.client.set_terminated(self.run_id, "FINISHED")

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, {"killed": "KILLED"}.get(status, "FAILED"))
