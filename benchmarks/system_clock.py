"""What the simulated clock and the device profiles (``system.*``) cost a run.

    python benchmarks/system_clock.py [--quick] [--repeats K] [--rounds R] [--sizes 100,10000]

The same run with and without a ``system`` section, alternating in one process
(A B A B ...), ``--repeats`` times each, at 100 and 10,000 parties: synthetic-images
of 1x16x16, 20 samples per party, iid, logistic regression (2.6k weights, so that
what is measured is fedsim's own work, not training), one epoch of batch 64, a cohort
of 10 (``fraction_fit`` 0.1 and 0.001), no central evaluation, no checkpoints, no
plots, one torch thread. With the clock: ``system.source: synthetic`` with
``duty_cycle: 0.9`` (availability-aware sampling over every party each round) and
``round_deadline: .inf`` (every reply timed and settled, none dropped), so both runs
train the same number of replies; the profiles are asked for three times (the config's
check, the server, the summary: once in a process, made again for every run
here as a fresh process would). Reported: the median wall time of ``fedsim.run``
(setup included) of each, and the median of the paired ratios. Goal: <= 1.05.
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
from fedsim.system.sources import _MADE  # noqa: E402


def config(n: int, rounds: int, clock: bool) -> dict:
    cfg = _bench.base_config(
        data={"n_train": 20 * n, "image_shape": [1, 16, 16], "num_classes": 10},
        partition={"n_parties": n, "min_size": 1},
        model={"name": "mlp", "hidden": []},
        federation={"rounds": rounds, "fraction_fit": 10 / n},
        eval={"model_heterogeneity": False},
    )
    if clock:
        cfg["system"] = {"source": "synthetic", "duty_cycle": 0.9, "round_deadline": float("inf")}
    return cfg


def timed(cfg: dict, out: Path) -> float:
    # a fresh process makes the profiles once; this one would keep them from the last run
    _MADE.clear()
    t0 = time.perf_counter()
    fedsim.run(cfg, out=out, overwrite=True)
    return time.perf_counter() - t0


def measure(n: int, rounds: int, repeats: int, root: Path) -> tuple[float, float, float]:
    timed(config(n, 2, False), root / "warm")  # the data set's cache and the first imports
    plain, clocked, ratios = _bench.alternating_pairs(
        lambda: timed(config(n, rounds, False), root / "a"), lambda: timed(config(n, rounds, True), root / "b"), repeats
    )
    return statistics.median(plain), statistics.median(clocked), statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="100 parties, 2 repeats, 5 rounds")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--sizes", default="100,10000")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sizes = [100] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats, rounds = (2, 5) if args.quick else (args.repeats, args.rounds)
    print(_bench.setup_line())
    print(f"{rounds} rounds of 10 clients, median of {repeats} alternating pairs\n")
    print("| parties | without system (s) | with the clock (s) | ratio (median of pairs) |")
    print("| ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            a, b, r = measure(n, rounds, repeats, Path(tmp))
            print(f"| {n:,} | {a:.2f} | {b:.2f} | {r:.3f} |", flush=True)


if __name__ == "__main__":
    main()
