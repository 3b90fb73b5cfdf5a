"""The ``fedsim`` command line's grammar: one subparser a command, each with its
arguments and help. What the commands do is :mod:`fedsim.cli`.
"""

from __future__ import annotations

import argparse
import sys

from fedsim.version import __version__


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (its default prints the usage block first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


#: what ``add_subparsers`` returns (argparse names its class with an underscore)
Subparsers = argparse._SubParsersAction


def _add_run(sub: Subparsers) -> None:
    p = sub.add_parser("run", help="run one federated experiment", description="Run one federated experiment.")
    p.add_argument("config", help="experiment YAML")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. partition.beta=0.1")
    p.add_argument("--out", help="run directory (default: runs/<dataset>-<scheme>-<strategy>-s<seed>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_common(p)


def _add_partition(sub: Subparsers) -> None:
    p = sub.add_parser(
        "partition",
        help="partition only: class counts, heterogeneity, dataidxs, plot",
        description="Partition a dataset and report its heterogeneity, without training.",
    )
    p.add_argument("config", nargs="?", help="experiment YAML (its data.* and partition.* keys)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. partition.scheme=dirichlet")
    p.add_argument("--out", help="directory for dataidxs.npz, partition.json and label_distribution.png")
    p.add_argument("--labels", help="a .npy file of integer labels to partition instead of the config's dataset")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    _add_common(p)


def _add_sweep(sub: Subparsers) -> None:
    p = sub.add_parser("sweep", help="run a grid of experiments", description="Run strategies x partitions x seeds.")
    p.add_argument("sweep", help="sweep YAML (base, overrides, grid, seeds)")
    p.add_argument("--out", help="sweep directory (default: runs/sweep-<name>)")
    p.add_argument("--workers", type=int, default=1, help="runs at once, each in its own process")
    p.add_argument("--resume", action="store_true", help="skip finished runs, resume interrupted ones")
    p.add_argument(
        "--select-by",
        dest="select_by",
        help="pick the best setting per group by this validation metric (e.g. val_accuracy)",
    )
    p.add_argument("--folds", type=int, default=0, help="K-fold cross-validation for --select-by")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    _add_common(p)


def _add_tune(sub: Subparsers) -> None:
    p = sub.add_parser(
        "tune",
        help="tune hyperparameters with Optuna, choose by validation, test once",
        description="Search a space of hyperparameters with Optuna (a seeded TPE sampler and a pruner on the "
        "per-round validation value), choose by validation only, retrain the choice on all training data and test it once.",
    )
    p.add_argument("tune", help="tune YAML (base, overrides, space, n_trials, seed, ...)")
    p.add_argument("--out", help="tune directory (default: runs/tune-<name>)")
    p.add_argument("--workers", type=int, default=1, help="trials at once, each in its own process")
    p.add_argument("--resume", action="store_true", help="continue the study in --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_common(p)


def _add_report(sub: Subparsers) -> None:
    p = sub.add_parser(
        "report",
        help="tables and plots of a run or sweep directory",
        description="Tables and plots of a run or a sweep.",
    )
    p.add_argument("dir", help="a run directory or a sweep directory")
    p.add_argument(
        "--measure",
        default="tv_mean",
        help="x axis of accuracy against heterogeneity: tv_mean (default), js_mean, hellinger_mean, size_cv, ... or beta",
    )
    _add_common(p)


def _add_strategies(sub: Subparsers) -> None:
    p = sub.add_parser(
        "strategies",
        help="every algorithm with its hyperparameters and defaults",
        description="List the federated algorithms, their strategy.* hyperparameters, defaults and allowed values.",
    )
    p.add_argument("name", nargs="?", help="show one algorithm only")
    _add_common(p)


def _add_attacks(sub: Subparsers) -> None:
    p = sub.add_parser(
        "attacks",
        help="every attack and defence with its parameters and defaults",
        description="List the attacks (attack.*) and defences (defence.*), their parameters, defaults and allowed values.",
    )
    p.add_argument("name", nargs="?", help="show one attack or defence only")
    _add_common(p)


def _add_plugins(sub: Subparsers) -> None:
    p = sub.add_parser(
        "plugins",
        help="every plug-in of every kind, or of one kind with its keys and defaults",
        description="List the plug-ins (strategies, attacks, defences, datasets, schemes, models, engines, trackers, "
        "privacy-modes): how a config chooses each, what it does, its own keys with defaults and allowed values.",
    )
    p.add_argument("kind", nargs="?", help="one kind: strategies, attacks, defences, datasets, schemes, ...")
    p.add_argument("name", nargs="?", help="one plug-in of that kind")
    _add_common(p)


def _add_inspect(sub: Subparsers) -> None:
    p = sub.add_parser(
        "inspect",
        help="parameters, FLOPs and size of a model",
        description="Parameters, FLOPs and size per layer and in total.",
    )
    p.add_argument("model", help="model name (simple-cnn, mlp, resnet18, ...)")
    p.add_argument("overrides", nargs="*", help="e.g. data.dataset=mnist model.projection_head=true")
    _add_common(p)


#: each command's parser, in the order ``fedsim --help`` lists them
SUBCOMMANDS = (
    _add_run,
    _add_partition,
    _add_sweep,
    _add_tune,
    _add_report,
    _add_strategies,
    _add_attacks,
    _add_plugins,
    _add_inspect,
)


def build_parser() -> argparse.ArgumentParser:
    """``fedsim``'s parser: the top level (``--version``) and one subparser a command."""
    parser = _Parser(
        prog="fedsim",
        description="Flower-native federated learning simulator for non-IID research.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"fedsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # no abbreviations: `--resum` must be an error, not a silent --resume
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, allow_abbrev=False, **k)  # type: ignore[method-assign]
    for add in SUBCOMMANDS:
        add(sub)
    return parser
