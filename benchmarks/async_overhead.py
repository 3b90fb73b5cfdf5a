"""What the asynchronous event loop (``asynchronous.mode``) costs over synchronous rounds
doing the same training.

    python benchmarks/async_overhead.py [--quick] [--repeats K] [--rounds R]

Pairs of runs alternating in one process (A B A B ...), ``--repeats`` pairs each, every
pair the same training, on synthetic-images of 1x28x28, iid parties of 40 samples, one
epoch of batch 32, one torch thread, no central evaluation, no checkpoints, no plots:

* **same cohorts**: 10 parties, equal devices (``compute_spread`` and
  ``bandwidth_spread`` 0); FedAvg over all 10 for R rounds against FedBuff with
  K = concurrency = 10, server lr 1, no momentum for R steps: the reduction to FedAvg,
  so both train the very same replies (the same parties, seeds and models);
* **one at a time**: 100 parties of equal work on heavy-tailed devices (the synthetic
  source's defaults); FedAvg with a cohort of 10 for R rounds against FedBuff with
  K = concurrency = 10 for R steps: both train 10 R replies of the same size, but the
  loop dispatches each freed slot as it frees, one party per message (no cohort).

Two models: a logistic regression (7.9k weights: what is measured is mostly fedsim's
own work) and NIID-Bench's simple CNN (the training a real run does). Reported: the
median wall time of ``fedsim.run`` of each, the median of the paired ratios and their
range (min-max). Goal: <= 1.05.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import _bench  # noqa: E402
import torch  # noqa: E402

import fedsim  # noqa: E402

MODELS = {"logistic": {"name": "mlp", "hidden": []}, "simple-cnn": {"name": "simple-cnn"}}
EQUAL = {"source": "synthetic", "compute_spread": 0.0, "bandwidth_spread": 0.0}


def config(scenario: str, model: str, rounds: int, loop: bool) -> dict:
    n = 10 if scenario == "same cohorts" else 100
    cfg = _bench.base_config(
        data={"n_train": 40 * n, "image_shape": [1, 28, 28], "num_classes": 10},
        partition={"n_parties": n, "min_size": 1},
        model=MODELS[model],
        train={"batch_size": 32},
        federation={"rounds": rounds, "fraction_fit": 10 / n},
        eval={"model_heterogeneity": False},
        system=EQUAL if scenario == "same cohorts" else {"source": "synthetic"},
    )
    if loop:
        cfg["asynchronous"] = {
            "mode": "fedbuff",
            "concurrency": 10,
            "buffer_size": 10,
            "server_lr": 1.0,
            "server_momentum": 0.0,
        }
    return cfg


def timed(cfg: dict, out: Path) -> float:
    t0 = time.perf_counter()
    fedsim.run(cfg, out=out, overwrite=True)
    return time.perf_counter() - t0


def measure(scenario: str, model: str, rounds: int, repeats: int, root: Path) -> tuple[float, float, list[float]]:
    timed(config(scenario, model, 2, True), root / "warm")  # the data set's cache and the first imports
    sync, loop, ratios = _bench.alternating_pairs(
        lambda: timed(config(scenario, model, rounds, False), root / "a"),
        lambda: timed(config(scenario, model, rounds, True), root / "b"),
        repeats,
    )
    return statistics.median(sync), statistics.median(loop), ratios


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 repeats, 5 rounds")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats, rounds = (2, 5) if args.quick else (args.repeats, args.rounds)
    print(_bench.setup_line())
    print(f"{rounds} rounds or steps of 10 replies, {repeats} alternating pairs\n")
    print("| scenario | model | synchronous (s) | event loop (s) | ratio: median of pairs (min-max) |")
    print("| --- | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in ("same cohorts", "one at a time"):
            for model in MODELS:
                a, b, r = measure(scenario, model, rounds, repeats, Path(tmp))
                spread = f"{statistics.median(r):.3f} ({min(r):.3f}-{max(r):.3f})"
                print(f"| {scenario} | {model} | {a:.2f} | {b:.2f} | {spread} |", flush=True)


if __name__ == "__main__":
    main()
