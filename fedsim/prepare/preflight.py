"""Before a run: everything that can refuse the input, then the run directory's first files.

:func:`open_run` is the one way into a run directory, for the Python API and for
``flwr run .``; its steps, each a call into the module that knows: the directory is
ours (:mod:`fedsim.rundir.ownership`), a resume may continue it
(:mod:`fedsim.prepare.resume`), the input can run (:mod:`fedsim.prepare.checks`: the
data set loads, the partition can be made, the model fits in memory, the algorithm,
the attack and privacy accept them, the Ray head answers), all before writing
anything; then the directory's lock is taken and ``config.yaml``, ``dataidxs.npz``,
``partition.json`` and the label plot are written, once, from what the checks loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import partitioners
from fedsim.config.load import merge_into_saved
from fedsim.inputs.localtest import LocalTest
from fedsim.inputs.run_inputs import compute_partition, load_bundle, read_dataidxs
from fedsim.prepare.checks import CheckedInputs, check_inputs
from fedsim.prepare.resume import check_resume
from fedsim.rundir import ownership
from fedsim.rundir.store import RunStore, atomic_write_json, atomic_write_text
from fedsim.schema.experiment import ExperimentConfig
from fedsim.schema.identity import to_yaml
from partitioners.registry import partition_params
from partitioners.stats import class_count_matrix

log = logging.getLogger(__name__)

#: partition.json lists the class counts (and the feature-noise levels and local test
#: set sizes) party by party up to this many parties; above, they are null (the counts follow from dataidxs.npz and the
#: labels: ``partitioners.stats.class_count_matrix``). A million parties' table took 32 s
#: and 180 MB to write (benchmarks/scale.py)
PER_PARTY_LIMIT = 10_000


def write_partition(
    out: Path,
    dataidxs: Mapping[int, np.ndarray],
    labels: np.ndarray,
    num_classes: int | None,
    cfg: ExperimentConfig,
    dataset: str,
    plot: Path | None,
    local_test: LocalTest | None = None,
) -> dict:
    """``dataidxs.npz`` and ``partition.json`` (the class counts and heterogeneity
    measures) in ``out``, and the label-distribution plot at ``plot``: the same files
    for a run directory and for ``fedsim partition``. Returns the measures (above
    :data:`PER_PARTY_LIMIT` parties, the class counts as a matrix where a plot is drawn,
    else None)."""
    params = partition_params(cfg)
    partitioners.save_dataidxs(
        out / "dataidxs.npz",
        dataidxs,
        labels,
        cfg.partition.scheme,
        params,
        cfg.seed,
        local_test.indices if local_test else None,
        local_test.source if local_test else "",
    )
    listed = len(dataidxs) <= PER_PARTY_LIMIT
    het = partitioners.heterogeneity(labels, dataidxs, num_classes=num_classes, class_counts=listed)
    if local_test is not None:
        sizes = [int(local_test.indices.get(j, np.empty(0)).size) for j in range(len(dataidxs))]
        het["local_test"] = {"mode": cfg.eval.local_test, "source": local_test.source, "sizes": sizes}
    noise = cfg.data.feature_noise
    written = het if listed or local_test is None else {**het, "local_test": {**het["local_test"], "sizes": None}}
    atomic_write_json(
        out / "partition.json",
        {
            "scheme": cfg.partition.scheme,
            "params": params,
            "seed": cfg.seed,
            "dataset": dataset,
            "feature_noise": noise,
            "noise_levels": (
                partitioners.noise_levels(noise, cfg.partition.n_parties).tolist() if noise > 0 and listed else None
            ),
            **written,
        },
    )
    if plot is not None:
        if not listed:  # the plot's, and the caller's: fedsim partition prints the first rows
            het["class_counts"] = class_count_matrix(labels, dataidxs, het["n_classes"])[1]
        plot.parent.mkdir(parents=True, exist_ok=True)
        partitioners.plot_label_distribution(het["class_counts"], plot, title=partition_title(cfg, dataset))
    return het


def partition_title(cfg: ExperimentConfig, dataset: str) -> str:
    """``synthetic-images: dirichlet(beta=0.5), 10 parties``."""
    shown = {
        k: v
        for k, v in partition_params(cfg).items()
        if isinstance(v, (int, float, str)) and k not in ("min_size", "max_redraws")
    }
    params = ", ".join(f"{k}={v}" for k, v in shown.items())
    return f"{dataset}: {cfg.partition.scheme}{f'({params})' if params else ''}, {cfg.partition.n_parties} parties"


def prepare_run_dir(cfg: ExperimentConfig, store: RunStore, inputs: CheckedInputs | None = None) -> None:
    """Write ``config.yaml`` (the resolved config of this start: a resume may raise the
    rounds or the tolerances) and, on a fresh start, the partition files, from what
    :func:`~fedsim.prepare.checks.check_inputs` loaded (loaded here without it). A
    resumed run keeps its ``dataidxs.npz``, checked against the data set's labels."""
    bundle = inputs.bundle if inputs is not None else load_bundle(cfg)
    partition = inputs.partition if inputs is not None else None
    labels = bundle.y_train.numpy()
    # a resume changes only what this start changes: the saved keys stay the run's own
    atomic_write_text(store.config, merge_into_saved(cfg, store.config) if store.config.exists() else to_yaml(cfg))
    if store.dataidxs.exists():
        read_dataidxs(store, labels)
        return
    dataidxs, local_test = partition if partition is not None else compute_partition(cfg, bundle)
    plot = store.plots / "label_distribution.png" if cfg.output.plots else None
    write_partition(store.root, dataidxs, labels, bundle.num_classes, cfg, cfg.data.dataset, plot, local_test)


@dataclass
class OpenedRun:
    """A run directory checked, locked and prepared; ``done`` says why nothing is left to run."""

    store: RunStore
    done: str | None = None


@contextmanager
def open_run(cfg: ExperimentConfig, run_dir: Path, *, resume: bool, overwrite: bool) -> Iterator[OpenedRun]:
    """Check, lock and prepare ``run_dir`` for ``cfg`` (module docstring); the lock is
    held until the ``with`` block ends.

    Everything that can refuse the input is checked before anything is written (not
    even the lock file), then what another process may have changed meanwhile is
    checked again under the lock."""
    store = RunStore(run_dir)
    ownership.claim(run_dir, "run", resume=resume, overwrite=overwrite, check_only=True)
    note = check_resume(cfg, store) if resume else None
    if note is not None:
        yield OpenedRun(store, note)
        return
    inputs = check_inputs(cfg, store, resume)
    with ownership.DirLock(run_dir, "run"):
        note = check_resume(cfg, store) if resume else None
        if note is not None:
            yield OpenedRun(store, note)
            return
        ownership.claim(run_dir, "run", resume=resume, overwrite=overwrite)
        prepare_run_dir(cfg, store, inputs)
        yield OpenedRun(store)
