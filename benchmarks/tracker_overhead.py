"""What the experiment trackers cost a run: per round, and once at its start and end.

    python benchmarks/tracker_overhead.py [--quick] [--rounds R] [--rows N]

The reference is a fedsim round of engine_overhead.py's case (a) in the same process:
simple-cnn, 10 parties x 500 synthetic 3x32x32 images, 1 local epoch, with fedsim's
defaults for what a researcher keeps (central evaluation every round, checkpoints,
model heterogeneity); its median round time over rounds 2..R.

Then each tracker (``mlflow`` on a fresh SQLite store, ``wandb`` with
``WANDB_MODE=offline``, ``tensorboard``) is driven through fedsim's own
``RunTrackers`` with that run's config, files and real ``metrics.jsonl`` row: the start
(creating the store and the tracker's run), ``--rows`` rounds of ``log_round`` (the
median is the per-round cost, printed as a share of the reference round), and the
finish (summary and files as artifacts). Trackers that are not installed are skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds, 20 rows")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--rows", type=int, default=100)
    args = ap.parse_args()
    rounds, n_rows = (3, 20) if args.quick else (args.rounds, args.rows)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")

    import fedsim
    from fedsim.config.load import load_config
    from fedsim.trackers import RunTrackers

    print(_bench.setup_line())
    cfg_dict = _bench.deep_update(
        _bench.base_config(),
        {
            "data": {"n_train": 5000, "n_test": 1000, "image_shape": [3, 32, 32]},
            "partition": {"n_parties": 10},
            "model": {"name": "simple-cnn"},
            "federation": {"rounds": rounds, "eval_every": 1},
            "eval": {"train_sample": 1000},
            "output": {"checkpoint_every": 1, "plots": True},
        },
    )
    tmp = Path(tempfile.mkdtemp(prefix="fedsim-bench-trackers-"))
    try:
        ref = fedsim.run(cfg_dict, out=tmp / "ref")
        round_s = statistics.median(r["round_time_s"] for r in ref.history[1:])
        row = ref.history[-1]
        n_keys = sum(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row.values()) - 1
        print(f"reference: fedsim round {round_s:.3f} s (median of rounds 2..{rounds}); a row has {n_keys} scalars")
        print(f"{'tracker':<12}{'start s':>9}{'per round ms':>14}{'of a round':>12}{'finish s':>10}")
        for name, module in (("mlflow", "mlflow"), ("wandb", "wandb"), ("tensorboard", "tensorboard")):
            if importlib.util.find_spec(module) is None:
                print(f"{name:<12} not installed: skipped")
                continue
            run_dir = tmp / name
            shutil.copytree(ref.run_dir, run_dir, ignore=shutil.ignore_patterns("checkpoints", "client_state"))
            cfg = load_config(cfg_dict, [f"output.trackers=[{name}]"])
            t0 = time.perf_counter()
            trackers = RunTrackers(cfg, run_dir, [])
            start = time.perf_counter() - t0
            times = []
            for i in range(1, n_rows + 1):
                t = time.perf_counter()
                trackers.log_round({**row, "round": i})
                times.append(time.perf_counter() - t)
            t = time.perf_counter()
            trackers.finish(ref.summary)
            finish = time.perf_counter() - t
            per = statistics.median(times)
            ok = "" if not trackers.record or trackers.record.data[name]["status"] == "finished" else "  (failed)"
            print(f"{name:<12}{start:>9.2f}{1000 * per:>14.2f}{100 * per / round_s:>11.1f}%{finish:>10.2f}{ok}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
