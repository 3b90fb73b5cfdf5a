"""The ``fedsim`` command line: run, partition, sweep, report, inspect.

A bad config, argument or file is one line on stderr and exit code 2 (``--debug``
shows the traceback). Only this module prints; the library logs.
"""

from __future__ import annotations

import argparse
import errno
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from fedsim.cli_parser import build_parser
from fedsim.errors import FedsimError

if TYPE_CHECKING:  # for the hints only: the commands import what they run when they run it
    from rich.console import Console
    from rich.progress import Progress

    from fedsim.api import RunResult
    from fedsim.schema.experiment import ExperimentConfig


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers such as Slurm send on preemption): stop as Ctrl-C does."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


#: what a failed write usually means, and what to do
_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space, then continue with --resume (the last checkpoint is intact)",
    errno.EDQUOT: "the disk quota is exceeded: free space, then continue with --resume",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.EACCES: "permission denied: choose another --out or fix the permissions",
    errno.EPERM: "operation not permitted: choose another --out or fix the permissions",
}


def describe_os_error(exc: OSError) -> str:
    where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
    hint = _OS_HINTS.get(exc.errno or -1)
    return f"cannot write{where}: {hint}" if hint else f"{exc.strerror or exc}{where}"


# ------------------------------------------------------------------- commands


def _console():
    from rich.console import Console

    return Console()


def _round_status(row: dict) -> str:
    """The progress bar's text for one round's metrics row: what the run is for first."""
    status = []
    if row.get("personal_accuracy_wmean") is not None:  # a personalised run: its own models first
        status.append(f"own models {row['personal_accuracy_wmean']:.4f}")
    if row.get("test_accuracy") is not None:
        status.append(f"test acc {row['test_accuracy']:.4f}")
    if row.get("attack_success_rate") is not None:
        status.append(f"attack success {row['attack_success_rate']:.4f}")
    if row.get("train_loss") is not None:
        status.append(f"local train loss {row['train_loss']:.4f}")
    if row.get("epsilon") is not None:  # privacy.mode: the privacy spent so far
        status.append(f"ε {row['epsilon']:.2f}")
    elif row.get("epsilon_infinite"):  # no noise
        status.append("ε ∞")
    if row.get("failures"):
        status.append(f"{len(row['failures'])} failed")
    return "  ".join(status)


class _RunDisplay:
    """What ``fedsim run`` shows while a run goes: its directory, notes and (unless
    ``--quiet``) a progress bar a round; its methods are the run's :class:`RunHooks`."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console = console
        self.progress = None if quiet else _progress_bar(console)
        self.task: dict = {}  # the bar's task, once the run has started

    def on_open(self, run_dir: Path) -> None:
        self.console.print(f"run directory: {run_dir}", style="dim", soft_wrap=True)  # a path is never broken

    def on_note(self, line: str) -> None:
        self.console.print(line, style="dim")

    def on_start(self, start_round: int, rounds: int) -> None:
        if start_round > 1:
            self.console.print(f"resuming from round {start_round - 1} of {rounds}", style="dim")
        if self.progress is not None:
            self.task["id"] = self.progress.add_task("run", total=rounds, completed=start_round - 1, status="")
            self.progress.start()

    def on_round(self, row: dict) -> None:
        if self.progress is not None:
            self.progress.update(self.task["id"], completed=row["round"], status=_round_status(row))

    def stop(self) -> None:
        if self.progress is not None and self.task:  # stopping a progress that never started prints a blank line
            self.progress.stop()


def _progress_bar(console: Console) -> Progress:
    """The rich progress bar of a run: round, bar, the round's status, elapsed and left."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("round {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def cmd_run(args: argparse.Namespace) -> int:
    """``fedsim run``: one experiment, with a progress bar, then its summary table."""
    from fedsim.api import resolve_run_dir, run
    from fedsim.config.load import load_config
    from fedsim.server.app import RunHooks

    console = _console()
    cfg = load_config(args.config, args.overrides)
    # chosen before the run starts, so that an interrupt can name it (continue_command)
    args.run_dir, chosen = resolve_run_dir(cfg, args.out, args.resume, args.overwrite)
    if chosen:
        console.print(
            f"--resume: continuing the newest unfinished run of this config, {args.run_dir}",
            style="dim",
            soft_wrap=True,
        )
    display = _RunDisplay(console, args.quiet)
    hooks = RunHooks(
        on_open=display.on_open, on_start=display.on_start, on_round=display.on_round, on_note=display.on_note
    )
    try:
        result = run(cfg, out=args.run_dir, resume=args.resume, overwrite=args.overwrite, hooks=hooks)
    finally:
        display.stop()
    _warn_of_outcome(result)
    _print_summary(console, result.summary, result.run_dir)
    return 0


def _warn_of_outcome(result: RunResult) -> None:
    """On stderr: a note on the run (e.g. already finished), and a diverged run's round and reason."""
    if result.note:
        sys.stderr.write(f"fedsim: run in '{result.run_dir}' {result.note}\n")
    if result.summary.get("status") == "diverged":
        sys.stderr.write(
            f"fedsim: warning: the run diverged in round {result.summary.get('diverged_round')}: "
            f"{result.summary.get('divergence_reason')}\n"
        )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "-" if v is None else str(v)


#: the parties' own test data (``eval.local_test``): what a personalised run is for, so
#: its headline, before the global model's test accuracy
PARTY_KEYS = (
    "personal_test_accuracy",
    "personal_test_accuracy_worst10",
    "finetune_test_accuracy",
    "finetune_test_accuracy_worst10",
    "local_test_accuracy",
    "local_test_accuracy_worst10",
    "holdout_personal_test_accuracy",
    "holdout_finetune_test_accuracy",
    "holdout_local_test_accuracy",
)
PARTY_CAPTION = (
    "On the parties' own test data, pooled: personal_ each party's own model, finetune_ the global model "
    "fine-tuned by each party, local_ the global model (holdout_: parties that never trained). "
    "test_: the global model on the test set."
)


def _print_summary(console, summary: dict, run_dir: Path) -> None:
    """The run's summary table: its status, for runs with ``eval.local_test`` the accuracy
    on the parties' own test data first (a personalised run's headline), then the global
    model's on the test set, privacy, attack and partition measures; then the run
    directory on a line of its own."""
    from rich.table import Table

    from fedsim.rundir.plots import partition_label
    from fedsim.sweeps.tables import FINAL_METRICS

    party = [k for k in PARTY_KEYS if summary.get(k) is not None]
    # the path is not in the title: rich wraps a title to the table's width
    title = f"fedsim run: {summary.get('strategy')}, {partition_label(summary.get('partition') or {})}"
    table = Table(title=title, show_header=True, caption=PARTY_CAPTION if party else None, caption_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    status = summary.get("status") or "finished"
    if status == "diverged":
        status = f"diverged in round {summary.get('diverged_round')}"
    elif status == "stopped" and summary.get("stop_reason"):
        status = f"stopped: {summary['stop_reason']}"
    table.add_row("status", status)
    for key in ("strategy", "dataset", "model", "rounds", *party):
        table.add_row(key, _fmt(summary.get(key)))
    for key in (*FINAL_METRICS, "failures_total", "wall_time_s"):
        table.add_row(key, _fmt(summary.get(key)))
    for key in ("privacy_mode", "epsilon", "epsilon_mean", "delta", "accountant", "privacy_stop"):
        if key == "epsilon" and summary.get("epsilon_infinite"):
            table.add_row(key, "∞ (no noise: nothing is private)")
        elif summary.get(key) is not None:
            table.add_row(key, _fmt(summary[key]) if key != "delta" else f"{summary[key]:.3g}")
    for key in ("attack", "malicious_parties", "defence", "attack_success_rate"):
        if key in summary:  # runs with an attack or a defence
            table.add_row(key, _fmt(summary[key]))
    het = summary.get("heterogeneity", {})
    for key in ("tv_mean", "hellinger_mean", "size_cv"):
        if key in het:
            table.add_row(f"partition {key}", _fmt(het[key]))
    console.print(table)
    console.print(f"run directory: {run_dir}", soft_wrap=True)


class _Partitioned(NamedTuple):
    """What ``fedsim partition`` partitioned and how: written and printed alike for
    a --labels file and for a config's data set."""

    dataidxs: Any  # each party's sample indices
    labels: Any  # the labels partitioned (a 1-D integer array)
    num_classes: int | None  # None: counted from the labels (a --labels file)
    name: str  # the data's name in the default directory and partition.json
    local_test: Any  # the parties' own test data (eval.local_test), or None


def cmd_partition(args: argparse.Namespace) -> int:
    """``fedsim partition``: partition a data set (or a --labels file), write the
    partition's files and print its class counts and heterogeneity."""
    from fedsim.config.load import load_config
    from fedsim.prepare.preflight import write_partition  # torch, numpy and the partitioners
    from fedsim.rundir import ownership as rundir

    _config_or_labels(args)
    cfg = load_config(args.config, args.overrides)
    part = _partition_label_file(cfg, Path(args.labels)) if args.labels else _partition_dataset(cfg)
    out = Path(args.out) if args.out else Path("partitions") / default_partition_dir(cfg, part.name)
    rundir.claim(out, "partition", resume=False, overwrite=args.overwrite, check_only=True)
    with rundir.DirLock(out, "partition"):
        rundir.claim(out, "partition", resume=False, overwrite=args.overwrite)
        het = write_partition(
            out,
            part.dataidxs,
            part.labels,
            part.num_classes,
            cfg,
            part.name,
            plot=out / "label_distribution.png",
            local_test=part.local_test,
        )
    _print_partition(het, out)
    return 0


def _config_or_labels(args: argparse.Namespace) -> None:
    """A config file, or --labels with overrides only (the first of which argparse took
    for the config); neither is an error."""
    from fedsim.errors import ConfigError

    if args.config is not None and "=" in args.config and not Path(args.config).exists():
        # `fedsim partition --labels x.npy partition.n_parties=3`: no config, only overrides
        args.overrides = [args.config, *args.overrides]
        args.config = None
    if args.config is None and args.labels is None:
        raise ConfigError("give a CONFIG file, or --labels FILE.npy with partition.* overrides")


def _partition_label_file(cfg: ExperimentConfig, path: Path) -> _Partitioned:
    """Partition the labels of a .npy file by ``cfg.partition``; only a split local test
    set can be drawn (there is no test set)."""
    import numpy as np

    import partitioners
    from fedsim.errors import ConfigError, DataError
    from partitioners.registry import partition_params

    if not path.exists():
        raise DataError(f"--labels '{path}' does not exist")
    try:
        labels = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"--labels '{path}' is not a .npy array file ({type(exc).__name__})") from exc
    check_label_file(labels, path)
    try:
        dataidxs = partitioners.partition(
            labels, cfg.partition.scheme, cfg.partition.n_parties, seed=cfg.seed, **partition_params(cfg)
        )
    except ValueError as exc:
        raise ConfigError(f"partition: {exc}") from exc
    local_test = None
    if cfg.eval.local_test == "split":
        from fedsim.inputs.localtest import LocalTest, split_local_test

        dataidxs, held = split_local_test(dataidxs, labels, cfg.eval.local_test_fraction, cfg.seed)
        local_test = LocalTest(held, "train")
    elif cfg.eval.local_test != "none":
        raise ConfigError(
            f"eval.local_test '{cfg.eval.local_test}' needs the data set's test set; with --labels only split works"
        )
    return _Partitioned(dataidxs, labels, None, path.stem, local_test)


def _partition_dataset(cfg: ExperimentConfig) -> _Partitioned:
    """Load the config's data set and partition its training set as a run would."""
    from fedsim.inputs.run_inputs import compute_partition, load_bundle

    bundle = load_bundle(cfg)
    dataidxs, local_test = compute_partition(cfg, bundle)
    return _Partitioned(dataidxs, bundle.y_train.numpy(), bundle.num_classes, cfg.data.dataset, local_test)


def _print_partition(het: dict, out: Path) -> None:
    """The class counts, one line a heterogeneity measure, the local test sets, the files."""
    import partitioners

    print(partitioners.format_class_counts(het["class_counts"]))
    print()
    print(f"{'measure':<28}{'value':>12}")
    for key, value in het.items():
        if key in ("class_counts", "local_test"):
            continue
        print(f"{key:<28}{_fmt(value):>12}")
    if "local_test" in het:
        sizes = het["local_test"]["sizes"]
        print(
            f"{'local test (' + het['local_test']['mode'] + ')':<28}{sum(sizes):>12}  per party {min(sizes)}..{max(sizes)}"
            f" (from the {'training' if het['local_test']['source'] == 'train' else 'test'} set)"
        )
    print(f"\nwrote {out / 'dataidxs.npz'}, {out / 'partition.json'}, {out / 'label_distribution.png'}")


def default_partition_dir(cfg, name: str) -> str:
    """``<data>-<scheme>[-<param><value>...]-n<parties>-s<seed>``: another beta, another directory."""
    from partitioners.registry import partition_params

    shown = [
        f"{k.replace('_', '')}{v}"
        for k, v in partition_params(cfg).items()
        if isinstance(v, (int, float, str)) and not isinstance(v, bool) and k not in ("min_size", "max_redraws")
    ]
    return "-".join([name, cfg.partition.scheme, *shown, f"n{cfg.partition.n_parties}", f"s{cfg.seed}"])


#: the largest label a --labels file may hold: class counts are K-long vectors per party
MAX_LABEL = 1_000_000


def check_label_file(labels, path: Path) -> None:
    """--labels holds integer class ids in 0..MAX_LABEL (a huge id means a huge K)."""

    from fedsim.errors import DataError

    if labels.dtype.kind not in "iu":
        raise DataError(f"--labels '{path}' holds {labels.dtype} values; expected integer class ids 0..K-1")
    if labels.ndim != 1:
        raise DataError(f"--labels '{path}' has shape {labels.shape}; expected one label per sample (1-D)")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > MAX_LABEL):
        raise DataError(
            f"--labels '{path}' holds class ids from {int(labels.min())} to {int(labels.max())}; "
            f"expected 0..K-1 with K at most {MAX_LABEL} (relabel them with np.unique(labels, return_inverse=True))"
        )


def cmd_inspect(args: argparse.Namespace) -> int:
    from fedsim.config.load import load_config
    from fedsim.data import input_spec
    from fedsim.models import build_model
    from fedsim.models.inspect import format_report, inspect_model

    cfg = load_config(None, [f"model.name={args.model}", *args.overrides])
    shape, num_classes = input_spec(cfg.data)
    from fedsim.inputs.resources import check_model_fits

    check_model_fits(cfg.model, shape, num_classes, copies=2)
    model = build_model(cfg.model, shape, num_classes)
    print(format_report(inspect_model(model, shape)))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from fedsim.listing import listing

    print(listing(args.kind, args.name), end="")
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    from fedsim.listing import listing

    print(listing("strategies", args.name), end="")
    return 0


def cmd_attacks(args: argparse.Namespace) -> int:
    from fedsim.config.plugins import SECTIONS
    from fedsim.errors import ConfigError
    from fedsim.listing import listing

    kinds = ["attacks", "defences"]
    if args.name is not None:
        kinds = [k for k, s in zip(kinds, ("attack", "defence")) if args.name in SECTIONS[s].registry]
        if not kinds:
            names = sorted({n for s in ("attack", "defence") for n in SECTIONS[s].registry.available()})
            raise ConfigError(f"unknown attack or defence '{args.name}'; allowed: {', '.join(names)}")
    print("".join(listing(k, args.name) for k in kinds), end="")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from fedsim.sweeps import sweep

    result = sweep(
        args.sweep,
        out=args.out,
        workers=args.workers,
        resume=args.resume,
        select_by=args.select_by,
        folds=args.folds,
        progress=not args.quiet,
    )
    print(result.table_markdown)
    if result.selection_markdown:
        print(result.selection_markdown)
    print(
        f"{result.n_finished} finished, {result.n_diverged} diverged, {result.n_failed} failed "
        f"in {result.wall_time_s:.1f} s: {result.sweep_dir}"
    )
    for row in result.rows:
        if row.get("status") == "failed":
            print(f"  failed: {row['run']}: {row.get('error')}")
        elif row.get("status") == "diverged":  # a result, marked † in the tables: which run, when, why
            print(f"  diverged: {row['run']}: round {row.get('diverged_round')}: {row.get('divergence_reason')}")
    return 0 if result.n_failed == 0 else 1


def cmd_tune(args: argparse.Namespace) -> int:
    from fedsim.tuning import tune

    def on_trial(entry: dict) -> None:
        value = entry.get("value")
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry["params"].items())
        shown = f" {value:.4f}" if isinstance(value, float) else ""
        sys.stderr.write(f"trial {entry['number']}: {entry['state'].lower()}{shown}  {params}\n")

    result = tune(
        args.tune,
        out=args.out,
        workers=args.workers,
        resume=args.resume,
        progress=not args.quiet,
        on_trial=None if args.quiet else on_trial,
    )
    print(result.markdown)
    print(f"{result.tune_dir / 'tune.md'} ({result.wall_time_s:.1f} s)")
    return 0 if result.best_params is not None and result.n_final_failed == 0 else 1


def cmd_report(args: argparse.Namespace) -> int:
    from fedsim.report import report

    path = report(args.dir, measure=args.measure)
    print(path)
    return 0


COMMANDS = {
    "run": cmd_run,
    "partition": cmd_partition,
    "inspect": cmd_inspect,
    "sweep": cmd_sweep,
    "report": cmd_report,
    "tune": cmd_tune,
    "strategies": cmd_strategies,
    "attacks": cmd_attacks,
    "plugins": cmd_plugins,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # options may come before or after the key=value overrides (run CFG --quiet k=v):
    # argparse hands the overrides after an option back as unrecognised
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides or []) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _is_main_thread() else None
    try:
        return COMMANDS[args.command](args)
    except FedsimError as exc:
        if debug:
            raise
        sys.stderr.write(f"fedsim: error: {exc}\n")
        return exc.exit_code
    except Terminated:
        sys.stderr.write(f"fedsim: terminated (SIGTERM); {continue_command(args)}\n")
        return 143
    except KeyboardInterrupt:
        sys.stderr.write(f"fedsim: interrupted; {continue_command(args)}\n")
        return 130
    except MemoryError:
        if debug:
            raise
        sys.stderr.write("fedsim: error: out of memory: make the data set, the model or engine.workers smaller\n")
        return 2
    except OSError as exc:
        if debug:
            raise
        sys.stderr.write(f"fedsim: error: {describe_os_error(exc)}\n")
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def continue_command(args: argparse.Namespace) -> str:
    """How to go on after an interrupt: the command that resumes what was stopped, with
    the run directory named (a run without ``--out`` lives in a timestamped one)."""
    if args.command == "run":
        run_dir = getattr(args, "run_dir", None) or args.out
        if run_dir is None:  # stopped before the directory was chosen: nothing was written
            return "nothing was written; run the command again"
        words = ["fedsim", "run", args.config, *args.overrides, "--out", str(run_dir), "--resume"]
        words += ["--quiet"] if args.quiet else []
    elif args.command in ("sweep", "tune"):
        words = ["fedsim", args.command, getattr(args, args.command)]
        words += ["--out", args.out] if args.out else []
        words += ["--workers", str(args.workers)] if args.workers != 1 else []
        if args.command == "sweep":
            words += ["--select-by", args.select_by] if args.select_by else []
            words += ["--folds", str(args.folds)] if args.folds else []
        words += ["--resume"] + (["--quiet"] if args.quiet else [])
    else:
        return "nothing to resume"
    return f"continue with: {shlex.join(words)}"


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
