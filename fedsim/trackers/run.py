"""A run's trackers together: started, fed every round, finished; never the run's failure.

:class:`RunTrackers` starts each tracker the run's ``output`` asks for, hands each the
``metrics.jsonl`` rows as the recorder writes them and the summary and files at the end.
A tracker that raises (its server is down, the disk is full, its credentials are
missing) is logged as one warning, recorded in ``RUN_DIR/trackers.json`` (where and
why) and dropped for the rest of the process; the run goes on. ``trackers.json`` also
keeps each tracker's ids (the MLflow run id, the W&B run id), so a resumed run reopens
the same tracker runs, and a tracker that failed before is tried again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedsim.rundir.store import atomic_write_json
from fedsim.trackers.base import TrackedRun, Tracker, TrackingContext, chosen, config_params, get, run_files

log = logging.getLogger(__name__)

RECORD = "trackers.json"


def one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or "(no message)"
    text = f"{type(exc).__name__}: {msg}"
    return text if len(text) <= 300 else text[:297] + "..."


def read_record(path: Path) -> dict[str, Any]:
    """``trackers.json`` as a dict (empty when missing or unreadable: ids are then new)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class TrackerRecord:
    """``trackers.json`` of a run, sweep or tune directory: per tracker its ids, status
    and failures (written atomically after every change; a failure to write it is a
    warning too)."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / RECORD
        self.data = read_record(self.path)

    def state(self, name: str) -> dict[str, Any]:
        return dict((self.data.get(name) or {}).get("ids") or {})

    def started(self, name: str, ids: Mapping[str, Any]) -> None:
        entry = self.data.setdefault(name, {})
        entry.update({"status": "running", "ids": dict(ids)})
        self.write()

    def set_status(self, name: str, status: str) -> None:
        self.data.setdefault(name, {})["status"] = status
        self.write()

    def failed(self, name: str, where: str, exc: BaseException) -> None:
        entry = self.data.setdefault(name, {})
        entry["status"] = "failed"
        entry.setdefault("failures", []).append(
            {"where": where, "error": one_line(exc), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        )
        self.write()

    def write(self) -> None:
        try:
            atomic_write_json(self.path, self.data)
        except OSError as exc:
            log.warning("cannot write '%s': %s", self.path, exc.strerror or exc)


class RunTrackers:
    """The trackers of one run (see the module docstring)."""

    def __init__(
        self, cfg: Any, run_dir: str | Path, history: list[dict], context: TrackingContext | None = None
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.context = context or TrackingContext()
        self.active: dict[str, Tracker] = {}
        names = chosen(cfg.output)
        self.record = TrackerRecord(self.run_dir) if names else None
        if not names:
            return
        params = config_params(cfg)
        run_name = self.context.run_name or self.run_dir.name
        for name in names:
            tracker = get(name)()  # a new instance per run (the registry keeps one for its declarations)
            run = TrackedRun(self.run_dir, run_name, cfg, params, list(history), self.context, self.record.state(name))
            try:
                ids = tracker.start(run)
            except Exception as exc:  # a tracker's failure is never the run's
                self._failed(name, "start", exc)
                continue
            self.active[name] = tracker
            self.record.started(name, ids)

    def _failed(self, name: str, where: str, exc: BaseException) -> None:
        self.active.pop(name, None)
        log.warning(
            "tracker %s failed (%s): %s; the run goes on without it (recorded in %s)",
            name,
            where,
            one_line(exc),
            self.run_dir / RECORD,
        )
        if self.record is not None:
            self.record.failed(name, where, exc)

    def log_round(self, row: Mapping[str, Any]) -> None:
        for name, tracker in list(self.active.items()):
            try:
                tracker.log_round(row)
            except Exception as exc:
                self._failed(name, f"round {row.get('round')}", exc)

    def finish(self, summary: Mapping[str, Any]) -> None:
        """The run ended with ``summary``: each tracker gets it and the run's files."""
        files = run_files(self.run_dir, self.cfg.output.track_model)
        for name, tracker in list(self.active.items()):
            try:
                tracker.finish(summary, files)
            except Exception as exc:
                self._failed(name, "finish", exc)
                continue
            self.active.pop(name)
            self.record.set_status(name, "finished")

    def end(self, status: str) -> None:
        """The run stopped without a summary (``failed``, ``killed``); a resume reopens the trackers."""
        for name, tracker in list(self.active.items()):
            try:
                tracker.end(status)
            except Exception as exc:
                self._failed(name, "end", exc)
                continue
            self.active.pop(name)
            self.record.set_status(name, status)
