"""Weights & Biases: a W&B run per fedsim run, grouped by its sweep or tune.

The same content as MLflow: the flattened config as the run's config, every
``metrics.jsonl`` scalar with ``step=round``, the summary in the run's summary, and the
files as an artifact of type ``fedsim-run``. The run's files are written under
``RUN_DIR/wandb/``; ``WANDB_MODE=offline`` works without a network (``wandb sync
RUN_DIR/wandb/offline-run-*`` uploads them later). The run's id is kept in
``trackers.json``, so a resumed fedsim run resumes the same W&B run; W&B drops steps it
already has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsim.schema.sections import OutputConfig
from fedsim.trackers.base import TrackedRun, Tracker, register, round_metrics, summary_values
from fedsim.util.params import hp


@dataclass
class WandbParams(OutputConfig):
    """``output.*`` with ``wandb`` among the trackers: the common keys and W&B's own."""

    wandb_project: str = hp("fedsim", help="the W&B project of the runs", source="-")
    track_model: bool = hp(False, help="model.pt among the files handed to MLflow / W&B", source="-")


@register
class WandbTracker(Tracker):
    name = "wandb"
    summary = "a W&B run per fedsim run, grouped by its sweep or tune: config, metrics, summary, files"
    paper = "Weights & Biases (Biewald 2020); pip install 'fedsim[wandb]'"
    extra = "wandb"
    module = "wandb"
    Params = WandbParams

    def check(self, cfg: Any) -> str | None:
        if not cfg.output.wandb_project:
            return "config key 'output.wandb_project' must be a non-empty name"
        return None

    def start(self, run: TrackedRun) -> dict[str, Any]:
        import wandb

        self.run = wandb.init(
            project=run.config.output.wandb_project,
            dir=str(run.run_dir),
            id=run.state.get("id"),  # None: W&B makes one
            name=run.name,
            group=run.context.group,
            job_type=run.context.job_type,
            tags=[f"{k}={v}"[:64] for k, v in run.context.tags],  # W&B's limit of a tag
            resume="allow",
            reinit="create_new",  # a sweep runs many fedsim runs in one process
            # fedsim owns the terminal (progress bar) and measures its own resources
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        # a resume may raise federation.rounds: the config follows the run
        self.run.config.update(run.params, allow_val_change=True)
        self.step = int(self.run.step or 0)
        for row in run.history:
            self.log_round(row)
        return {"id": self.run.id, "project": run.config.output.wandb_project, "dir": str(run.run_dir / "wandb")}

    def log_round(self, row: Mapping[str, Any]) -> None:
        step = int(row["round"])
        if step <= self.step or row.get("aborted"):
            return
        self.run.log(round_metrics(row), step=step)
        self.step = step

    def finish(self, summary: Mapping[str, Any], files: Iterable[Path]) -> None:
        import wandb

        numbers, strings = summary_values(summary)
        self.run.summary.update({f"summary.{k}": v for k, v in {**numbers, **strings}.items()})
        files = list(files)
        if files:
            art = wandb.Artifact(f"run-{self.run.id}", type="fedsim-run")
            for f in files:
                art.add_file(str(f), name=f"plots/{f.name}" if f.parent.name == "plots" else f.name)
            self.run.log_artifact(art)
        self.run.finish(exit_code=0)

    def end(self, status: str) -> None:
        self.run.finish(exit_code=1)
