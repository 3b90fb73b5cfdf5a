"""A sweep's or a tune's runs in the trackers: an MLflow parent run, a W&B group.

:class:`GroupTracking` opens (or, on ``--resume``, reopens from ``trackers.json``) the
group's MLflow run in the group's store (``output.mlflow_uri``, ``MLFLOW_TRACKING_URI``,
or ``mlflow.db`` in the sweep or tune directory) and hands every run of the group a
:class:`~fedsim.trackers.base.TrackingContext` that nests it there and names its W&B
group. A tune's final sweep nests under the tune's run. Failures are warnings and
records, as for a run's trackers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedsim.trackers.base import TrackingContext, chosen, is_number
from fedsim.trackers.mlflow_tracker import PARAM_CHARS, client_for, experiment_id, resolve_uri
from fedsim.trackers.run import RECORD, TrackerRecord, one_line

log = logging.getLogger(__name__)


class GroupTracking:
    """The trackers' view of a sweep or tune in ``root`` (``kind``: sweep or tune)."""

    def __init__(
        self,
        root: Path,
        kind: str,
        name: str,
        output: Any,
        parent: TrackingContext | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.kind = kind
        self.names = chosen(output)
        parent = parent or TrackingContext()
        self.client = None
        self.run_id: str | None = None
        self.record = TrackerRecord(self.root) if "mlflow" in self.names else None
        uri = None
        if "mlflow" in self.names:
            uri = resolve_uri(output.mlflow_uri, parent.mlflow_uri, self.root)
            try:
                self._open_mlflow(uri, output.mlflow_experiment, name, parent, params or {})
            except Exception as exc:
                self._failed("start", exc)
        self.context = TrackingContext(
            mlflow_uri=uri,
            mlflow_parent_run_id=self.run_id,
            group=parent.group or name,
            job_type=parent.job_type,
            tags=(*parent.tags, (f"fedsim.{kind}", name)),
        )

    def _open_mlflow(self, uri: str, experiment: str, name: str, parent: TrackingContext, params: Mapping) -> None:
        from mlflow.entities import Param, RunStatus

        client = client_for(uri)
        state = self.record.state("mlflow")
        run_id = state.get("run_id") if state.get("tracking_uri") == uri else None
        if run_id:
            try:
                client.get_run(run_id)
                client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            except Exception as exc:  # deleted from the store, or unreadable: start a new MLflow run
                log.warning(
                    "tracker mlflow cannot reopen the %s's MLflow run %s (%s); it starts a new one",
                    self.kind,
                    run_id,
                    one_line(exc),
                )
                run_id = None
        if run_id is None:
            exp_id = experiment_id(client, experiment, uri)
            tags = {"fedsim.kind": self.kind, f"fedsim.{self.kind}_dir": str(self.root.resolve())}
            if parent.mlflow_parent_run_id:
                tags["mlflow.parentRunId"] = parent.mlflow_parent_run_id
            run_id = client.create_run(exp_id, run_name=f"{self.kind} {name}", tags=tags).info.run_id
            if params:
                client.log_batch(run_id, params=[Param(k, str(v)[:PARAM_CHARS]) for k, v in params.items()])
        self.client, self.run_id = client, run_id
        self.record.started("mlflow", {"run_id": run_id, "tracking_uri": uri})

    def _failed(self, where: str, exc: BaseException) -> None:
        log.warning(
            "tracker mlflow failed for the %s (%s): %s; its runs go on (recorded in %s)",
            self.kind,
            where,
            one_line(exc),
            self.root / RECORD,
        )
        self.client = None
        if self.record is not None:
            self.record.failed("mlflow", where, exc)

    def context_for(self, run_name: str, job_type: str, tags: tuple[tuple[str, str], ...] = ()) -> TrackingContext:
        """The context of one run of the group (the group's own job type, a tune's
        ``final``, wins over the run's)."""
        return dataclasses.replace(
            self.context,
            run_name=run_name,
            job_type=self.context.job_type or job_type,
            tags=(*self.context.tags, *tags),
        )

    def finish(self, files: Iterable[Path], metrics: Mapping[str, Any] | None = None, status: str = "FINISHED") -> None:
        """The group ended: its tables and figures as artifacts, its numbers as metrics."""
        if self.client is None or self.run_id is None:
            return
        try:
            from mlflow.entities import Metric

            ms = [Metric(k, float(v), 0, 0) for k, v in (metrics or {}).items() if is_number(v)]
            if ms:
                self.client.log_batch(self.run_id, metrics=ms)
            for f in files:
                if Path(f).is_file():
                    self.client.log_artifact(
                        self.run_id, str(f), artifact_path="figures" if Path(f).parent.name == "figures" else None
                    )
            self.client.set_terminated(self.run_id, status)
            self.record.set_status("mlflow", status.lower())
        except Exception as exc:
            self._failed("finish", exc)
