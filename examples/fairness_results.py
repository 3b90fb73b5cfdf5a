"""The README's client selection and fairness results, from a finished sweep of
``configs/sweeps/mnist-fairness.yaml``::

    python examples/fairness_results.py runs/mnist-fairness

Per setting (the sweep's ``strategy`` labels), mean ± sample std over the seeds: the final
test accuracy; the global model on the parties' own test data (pooled accuracy, std over
the parties, worst 10%, worst party, Jain's index: ``summary.json``'s
``local_test_accuracy*``); the round and the simulated hours at which the test accuracy
first reaches FedAvg's final test accuracy of the same seed (over the seeds that reach
it; "final": the mean of FedAvg's last 5 rounds, as one round of 10 parties of 100
moves the test accuracy by several points); the simulated hours of the whole run; and what the cohort costs the slow parties
(``participation``: the slowest quarter's share of the aggregated replies, the slowest
quarter's own-test accuracy, the parties never aggregated). Then the q-FFL paper's
measure: the change of the variance of the per-party accuracy against FedAvg.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

BASELINE = "fedavg"
#: FedAvg's final accuracy: the mean of its last this many rounds
LAST = 5


def _mean_std(xs: list[float], scale: float = 1.0, digits: int = 2) -> str:
    xs = [x * scale for x in xs if x is not None]
    if not xs:
        return "–"
    m = statistics.fmean(xs)
    return f"{m:.{digits}f}" + (f" ± {statistics.stdev(xs):.{digits}f}" if len(xs) > 1 else "")


def _first_reaching(history: list[dict], target: float) -> dict | None:
    return next((r for r in history if (r.get("test_accuracy") or 0.0) >= target - 1e-12), None)


def final(rows: list[dict]) -> float:
    """The mean test accuracy of the last :data:`LAST` evaluated rounds."""
    accs = [r["test_accuracy"] for r in rows if r.get("test_accuracy") is not None]
    return statistics.fmean(accs[-LAST:])


def last_mean(rows: list[dict], key: str) -> float | None:
    """The mean of ``key`` over the last :data:`LAST` rounds that have it (``metrics.jsonl``'s
    per-party measures: the last round alone moves with the one cohort before it)."""
    xs = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(xs[-LAST:]) if xs else None


def load(sweep_dir: Path) -> dict[str, dict[int, tuple[dict, list[dict]]]]:
    """label -> seed -> (summary.json, metrics.jsonl rows) of the finished runs."""
    index = json.loads((sweep_dir / "sweep.json").read_text())
    out: dict[str, dict[int, tuple[dict, list[dict]]]] = {}
    for run in index["runs"]:
        d = sweep_dir / run["name"]
        if not (d / "summary.json").exists():
            continue
        summary = json.loads((d / "summary.json").read_text())
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        out.setdefault(run["factors"]["strategy"], {})[run["seed"]] = (summary, rows)
    return out


def _col(summaries: list[dict], key: str) -> list:
    return [s.get(key) for s in summaries]


def _part(summaries: list[dict], key: str) -> list:
    return [(s.get("participation") or {}).get(key) for s in summaries]


def table(runs: dict[str, dict[int, tuple[dict, list[dict]]]]) -> list[str]:
    base = {seed: final(rows) for seed, (_, rows) in runs[BASELINE].items()}
    head = (
        "| setting | test acc (%) | party acc (%) | std over parties (pts) | worst 10% (%) | worst party (%) | "
        "Jain | std over parties, last 5 rounds (pts) | worst 10%, last 5 rounds (%) | rounds to FedAvg's final (reached) | sim. h to FedAvg's final | sim. h (all rounds) | "
        "slow quarter's share | slow quarter's acc (%) | never aggregated |"
    )
    lines = [head, "| --- |" + " ---: |" * 14]
    for label, seeds in runs.items():
        summaries = [s for s, _ in seeds.values()]
        hits = [_first_reaching(rows, base[seed]) for seed, (_, rows) in seeds.items() if seed in base]
        reached = [h for h in hits if h is not None]
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    _mean_std(_col(summaries, "test_accuracy"), 100),
                    _mean_std(_col(summaries, "local_test_accuracy"), 100),
                    _mean_std(_col(summaries, "local_test_accuracy_std"), 100),
                    _mean_std(_col(summaries, "local_test_accuracy_worst10"), 100),
                    _mean_std(_col(summaries, "local_test_accuracy_worst"), 100),
                    _mean_std(_col(summaries, "local_test_accuracy_jain"), 1, 4),
                    _mean_std([last_mean(rows, "local_accuracy_std") for _, rows in seeds.values()], 100),
                    _mean_std([last_mean(rows, "local_accuracy_worst10") for _, rows in seeds.values()], 100),
                    f"{_mean_std([h['round'] for h in reached], 1, 1)} ({len(reached)}/{len(hits)})",
                    _mean_std([h.get("sim_end_s") for h in reached], 1 / 3600),
                    _mean_std(_col(summaries, "sim_time_s"), 1 / 3600),
                    _mean_std(_part(summaries, "slow_quartile_share"), 1, 3),
                    _mean_std(_part(summaries, "slow_quartile_accuracy"), 100),
                    _mean_std(_part(summaries, "parties_never_aggregated"), 1, 1),
                ]
            )
            + " |"
        )
    return lines


def variance_change(runs: dict[str, dict[int, tuple[dict, list[dict]]]]) -> list[str]:
    """Each setting's variance of the per-party accuracy against FedAvg's, seed by seed
    (the variance averaged over the last :data:`LAST` rounds)."""

    def var(rows: list[dict]) -> float:
        return statistics.fmean(r["local_accuracy_std"] ** 2 for r in rows[-LAST:])

    base = {seed: var(rows) for seed, (_, rows) in runs[BASELINE].items()}
    out = []
    for label, seeds in runs.items():
        if label == BASELINE:
            continue
        changes = [100 * (var(rows) / base[seed] - 1) for seed, (_, rows) in seeds.items()]
        out.append(
            f"- {label}: variance over parties {_mean_std(changes, 1, 1)}% against FedAvg (per seed: "
            + ", ".join(f"{c:+.1f}%" for c in changes)
            + ")"
        )
    return out


def main(argv: list[str]) -> int:
    runs = load(Path(argv[0] if argv else "runs/mnist-fairness"))
    print(
        "FedAvg's final accuracy (mean of its last 5 rounds) per seed: "
        + ", ".join(f"{seed}: {100 * final(rows):.2f}%" for seed, (_, rows) in sorted(runs[BASELINE].items()))
    )
    print()
    print("\n".join(table(runs)))
    print()
    print("\n".join(variance_change(runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
