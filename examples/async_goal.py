"""Issue 30's goal on a sweep over ``asynchronous`` (configs/sweeps/mnist-async.yaml):
does each setting reach the synchronous FedAvg's final accuracy of the same seed, and
in what share of FedAvg's simulated time and with how many client updates?

    python examples/async_goal.py runs/mnist-async [--reference "FedAvg sync"]

Reads each run's ``metrics.jsonl`` (the rows where the model was evaluated) and prints
a Markdown table: per setting and seed, FedAvg's final accuracy and simulated time, the
first evaluated step at or above that accuracy (simulated seconds, client updates
aggregated until then) and the time ratio (FedAvg's time / the setting's); the goal is
a ratio >= 1.4 for FedBuff.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def rows_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def evaluated(run: Path) -> list[dict]:
    return [r for r in rows_of(run) if r.get("test_accuracy") is not None and not r.get("aborted")]


def runs_of(sweep: Path) -> dict[tuple[str, int], Path]:
    """(setting label, seed) -> run directory, from the sweep's summary.csv-free layout."""
    out = {}
    for run in sorted(p for p in sweep.iterdir() if (p / "summary.json").exists()):
        name = run.name  # asynchronous=<label>__seed=<n>
        label, seed = name.split("=", 1)[1].rsplit("__seed=", 1)
        out[(label, int(seed))] = run
    return out


def reach(rows: list[dict], target: float) -> tuple[float, int] | None:
    """(simulated seconds, client updates aggregated until then: every row's, evaluated or
    not) of the first evaluated row at or above ``target``."""
    updates = 0
    for r in rows:
        updates += int(r.get("clients") or 0)
        if r.get("test_accuracy") is not None and r["test_accuracy"] >= target - 1e-12:
            return float(r["sim_end_s"]), updates
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--reference", default="FedAvg_sync", help="the synchronous setting's label (as in file names)")
    args = ap.parse_args()
    runs = runs_of(args.sweep)
    seeds = sorted({s for (label, s) in runs if label == args.reference})
    print("| setting | seed | FedAvg final acc (%) | FedAvg simulated s | s to it | updates to it | time ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    ratios: dict[str, list[float]] = {}
    for label in sorted({label for (label, _) in runs}, key=lambda x: (x != args.reference, x)):
        for seed in seeds:
            if (label, seed) not in runs:
                continue
            ref = evaluated(runs[(args.reference, seed)])
            target, total = ref[-1]["test_accuracy"], float(ref[-1]["sim_end_s"])
            hit = reach(rows_of(runs[(label, seed)]), target)
            ratio = total / hit[0] if hit else None
            if ratio is not None:
                ratios.setdefault(label, []).append(ratio)
            cells = [f"{hit[0]:.0f}", str(hit[1]), f"{ratio:.2f}"] if hit else ["never", "-", "-"]
            print(
                f"| {label.replace('_', ' ')} | {seed} | {100 * target:.2f} | {total:.0f} | " + " | ".join(cells) + " |"
            )
    print()
    for label, rs in ratios.items():
        print(
            f"- {label.replace('_', ' ')}: time ratio median {statistics.median(rs):.2f} over {len(rs)} seeds that reached it"
        )


if __name__ == "__main__":
    main()
