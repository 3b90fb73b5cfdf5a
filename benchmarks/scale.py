"""Memory and per-round overhead of fedsim's local engine at 100, 1,000 and 10,000 parties, and up to a million.

    python benchmarks/scale.py [--quick] [--rounds R] [--sizes 100,1000,10000] [--no-extra] [--hidden 200,200]
    python benchmarks/scale.py --sizes 100000 --no-extra                      # 1,000 clients a round
    python benchmarks/scale.py --sizes 1000000 --samples 10 --fraction 0.0001 --no-extra   # 100 a round

The package measured is the one ``import fedsim`` finds: from a git worktree, set
``PYTHONPATH`` to it (an editable install points at its own checkout).

Each size runs in a FRESH Python subprocess (so its peak RSS is its own), with
``OMP_NUM_THREADS=1`` and ``engine.threads=1``: synthetic-images of 1x16x16, 20
samples per party (10,000 parties = 200,000 images), iid partition, the default
``mlp`` (``--hidden``: default ``''``, logistic regression with 2.6k weights, so that
the overhead is the engine's own; ``--hidden 200,200`` is a 94k-weight MLP, whose
weights the server decodes, averages and measures for every client: on this
project's 2-core machine 103 ms a round at 100 clients instead of 39 ms), 1 epoch of batch 64 (one step per
client), ``federation.fraction_fit = 0.01`` (at least one client: 1, 10 and 100
clients per round), no central evaluation, no checkpoints, no plots. With
``--no-extra`` left out, 100 parties at fraction 0.1 and 1.0 are run as well: the
same cohort sizes (10 and 100 clients) as 1,000 and 10,000 parties, to separate what
grows with the number of parties from what grows with the cohort.

Reported per size:

* peak RSS: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the subprocess, plus
  the peak of its own children (the local engine starts none, but ctypes runs
  ``ldconfig`` at import time, and a forked child is charged with its parent's pages:
  that column over-counts);
* round time: ``round_time_s`` of metrics.jsonl, median of rounds 2..R;
* overhead outside training: ``round_time_s`` minus the sum of the cohort's
  ``time_s`` in clients.jsonl (each client's wall time of its local training), in ms,
  median of rounds 2..R — what the server, the strategy, the Grid and the records cost;
* plain loop: the same number of parties trained by a plain PyTorch loop and
  averaged, in the same subprocess (the physical limit of a round);
* setup: from the call of ``fedsim.run`` to the end of round 1 (dataset generation,
  config checks, partition, partition statistics, run-directory files, the client
  runtime, round 1); the dataset's generation alone is shown beside it.

Goals (local engine): peak RSS under 4 GB, overhead under 50 ms a round; from 100,000
parties on (issue 34), set-up (with the data) at most 60 s, peak RSS at most the data's
own size (the uint8 images and int64 labels) + 2 GB, overhead at most 20 ms a round +
0.1 ms a client.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

SAMPLES_PER_PARTY = 20
IMAGE_SHAPE = [1, 16, 16]
RSS_GOAL_MB = 4096
OVERHEAD_GOAL_MS = 50.0
#: from this many parties on, the goals of a million parties (issue 34)
LARGE = 100_000
SETUP_GOAL_S = 60.0


def data_mb(n_train: int) -> float:
    """The training data's own size: uint8 images and int64 labels."""
    c, h, w = IMAGE_SHAPE
    return n_train * (c * h * w + 8) / 2**20


def goals_met(res: dict, rss_mb: float, over_ms: float, clients: int) -> bool:
    if res["n_parties"] < LARGE:
        return rss_mb < RSS_GOAL_MB and over_ms < OVERHEAD_GOAL_MS
    data = data_mb(res["n_parties"] * res["samples"])
    return res["setup_s"] <= SETUP_GOAL_S and rss_mb <= data + 2048 and over_ms <= 20.0 + 0.1 * clients


def child(n_parties: int, fraction: float, rounds: int, out_json: str, hidden: list[int], samples: int) -> None:
    """One size, in this (fresh) process: run fedsim and write the measurements as JSON."""
    t_import = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    import _bench

    import fedsim
    from fedsim.config.load import load_config
    from fedsim.inputs.run_inputs import load_bundle
    from fedsim.server.app import RunHooks

    import_s = time.perf_counter() - t_import
    cfg = _bench.base_config(
        data={"n_train": samples * n_parties, "image_shape": IMAGE_SHAPE, "num_classes": 10},
        partition={"n_parties": n_parties},
        model={"name": "mlp", "hidden": hidden},
        train={"lr": 0.01, "momentum": 0.9},
        federation={"rounds": rounds, "fraction_fit": fraction},
    )
    marks: dict[int, float] = {}
    hooks = RunHooks(on_round=lambda row: marks.setdefault(int(row["round"]), time.perf_counter()))
    t0 = time.perf_counter()
    # the dataset on its own first (fedsim.run then finds it in the per-process cache)
    load_bundle(load_config(cfg))
    data_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="fedsim-scale-") as tmp:
        res = fedsim.run(cfg, out=Path(tmp) / "run", hooks=hooks)
        total_s = time.perf_counter() - t0
        rows = _bench.read_jsonl(res.run_dir / "metrics.jsonl")
        clients = _bench.read_jsonl(res.run_dir / "clients.jsonl")
        run_dir_mb = sum(f.stat().st_size for f in Path(res.run_dir).rglob("*") if f.is_file()) / 2**20
    per_round = []
    for r in rows:
        ct = [float(c.get("time_s") or 0.0) for c in clients if c["round"] == r["round"] and c.get("stage") == "train"]
        per_round.append(
            {"round": r["round"], "round_time_s": float(r["round_time_s"]), "clients": len(ct), "client_s": sum(ct)}
        )
    self_mb, child_mb = _bench.peak_rss_mb()
    plain_s = plain_cohort_seconds(cfg, per_round[-1]["clients"] if per_round else 1)
    Path(out_json).write_text(
        json.dumps(
            {
                "n_parties": n_parties,
                "samples": samples,
                "fraction": fraction,
                "rounds": per_round,
                "import_s": import_s,
                "data_s": data_s,
                "setup_s": marks.get(1, float("nan")) - t0,
                "total_s": total_s,
                "rss_self_mb": self_mb,
                "rss_children_mb": child_mb,
                "run_dir_mb": run_dir_mb,
                "plain_s": plain_s,
            }
        )
    )


def plain_cohort_seconds(cfg: dict, k: int, repeats: int = 5) -> float:
    """The physical limit of one round: a plain PyTorch loop over k parties, then FedAvg (median)."""
    import _bench

    parties = _bench.load_parties(cfg)
    tr = parties.cfg.train
    model = parties.build_model()
    state = parties.initial_state()
    idxs = parties.indices[:k]
    times = []
    for rep in range(repeats + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        states = [
            _bench.plain_party_update(
                model,
                state,
                parties.x,
                parties.y,
                ix,
                parties.mean,
                parties.std,
                lr=tr.lr,
                momentum=tr.momentum,
                batch_size=tr.batch_size,
                epochs=int(tr.epochs),
                generator=_bench.shuffle_generator(0, rep, p),
            )
            for p, ix in enumerate(idxs)
        ]
        _bench.weighted_average(states, [int(ix.numel()) for ix in idxs])
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def run_size(n_parties: int, fraction: float, rounds: int, hidden: str, samples: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="fedsim-scale-json-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(n_parties),
            "--fraction",
            str(fraction),
            "--rounds",
            str(rounds),
            "--json",
            str(out),
            "--hidden",
            hidden,
            "--samples",
            str(samples),
        ]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"{n_parties} parties: subprocess exit {proc.returncode}: " + " | ".join(tail))
        res = json.loads(out.read_text())
    res["process_wall_s"] = wall
    return res


def summarise(res: dict) -> list[str]:
    rounds = res["rounds"]
    later = rounds[1:] or rounds
    rt = statistics.median(r["round_time_s"] for r in later)
    over = statistics.median((r["round_time_s"] - r["client_s"]) for r in later)
    rss = res["rss_self_mb"] + res["rss_children_mb"]
    if res["n_parties"] >= LARGE:  # the children's column is ldconfig's fork at import (see below)
        rss = res["rss_self_mb"]
    ok = "met" if goals_met(res, rss, over * 1e3, rounds[-1]["clients"]) else "MISSED"
    return [
        f"{res['n_parties']:,}",
        f"{res['fraction']:g}",
        f"{rounds[-1]['clients']}",
        f"{res['rss_self_mb']:,.0f} + {res['rss_children_mb']:,.0f}",
        f"{rt * 1e3:.1f}",
        f"{statistics.median(r['client_s'] for r in later) * 1e3:.1f}",
        f"{over * 1e3:.1f}",
        f"{res['plain_s'] * 1e3:.1f}",
        f"{res['setup_s']:.2f}",
        f"{res['data_s']:.2f}",
        f"{data_mb(res['n_parties'] * res.get('samples', SAMPLES_PER_PARTY)):,.0f}",
        f"{res['run_dir_mb']:.1f}",
        ok,
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds, 100 and 1,000 parties only")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per size (default 5; --quick 3)")
    ap.add_argument("--sizes", default=None, help="comma-separated party counts (default 100,1000,10000)")
    ap.add_argument("--fraction", type=float, default=0.01, help="federation.fraction_fit (default 0.01)")
    ap.add_argument("--no-extra", action="store_true", help="skip the extra 100-party runs at fraction 0.1 and 1.0")
    ap.add_argument(
        "--hidden",
        default="",
        help="mlp hidden widths (default '' = logistic regression, 2.6k weights: the engine's own overhead; "
        "200,200 = 94k weights, where copying 100 clients' weights adds ~60 ms a round)",
    )
    ap.add_argument("--samples", type=int, default=SAMPLES_PER_PARTY, help="samples per party (default 20)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
    if args.child is not None:
        child(args.child, args.fraction, rounds, args.json, hidden, args.samples)
        return
    import _bench

    sizes = (
        [int(s) for s in args.sizes.split(",")] if args.sizes else ([100, 1000] if args.quick else [100, 1000, 10000])
    )
    cases = [(n, args.fraction) for n in sizes]
    if not args.no_extra and 100 in sizes:
        # 10 and 100 clients a round from 100 parties: the cohorts of 1,000 and 10,000 parties
        cases[sizes.index(100) + 1 : sizes.index(100) + 1] = [(100, 0.1), (100, 1.0)]
    print(
        _bench.setup_line().replace(
            f"torch threads {__import__('torch').get_num_threads()}", "torch threads 1 (per subprocess)"
        )
    )
    print(
        f"synthetic-images {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}x{IMAGE_SHAPE[2]}, {args.samples} samples per party, iid, "
        f"mlp {hidden or '[] (logistic regression)'}, 1 epoch, batch 64, {rounds} rounds, no evaluation/checkpoints/plots; local engine, "
        "one fresh subprocess per row; per-round numbers are medians of rounds 2..R"
    )
    rows = []
    for n, frac in cases:
        try:
            res = run_size(n, frac, rounds, args.hidden, args.samples)
        except Exception as exc:  # keep the other sizes
            print(f"  {n:,} parties, fraction {frac:g}: failed: {exc}")
            continue
        times = ", ".join(f"{r['round_time_s'] * 1e3:.1f}" for r in res["rounds"])
        print(
            f"  {n:,} parties, fraction {frac:g}: round times [{times}] ms; subprocess {res['process_wall_s']:.1f} s "
            f"(imports {res['import_s']:.1f} s)"
        )
        rows.append(summarise(res))
    print()
    print(
        _bench.fmt_table(
            [
                "parties",
                "fraction",
                "clients/round",
                "peak RSS MB self + children",
                "round ms",
                "client train ms",
                "overhead ms",
                "plain loop ms",
                "setup s",
                "(data s)",
                "data MB",
                "run dir MB",
                "goals",
            ],
            rows,
        )
    )
    print(
        f"goals: peak RSS (self + children) < {RSS_GOAL_MB:,} MB and overhead (round - client training) "
        f"< {OVERHEAD_GOAL_MS:.0f} ms a round; from {LARGE:,} parties: setup <= {SETUP_GOAL_S:.0f} s, "
        "peak RSS (self) <= data MB + 2,048, overhead <= 20 ms + 0.1 ms a client"
    )
    print(
        "plain loop ms: the same cohort size trained by a plain PyTorch loop + FedAvg in the same subprocess "
        "(the physical limit of a round)"
    )
    print(
        "children: the peak RSS of the subprocess's own children (a fork for ldconfig at import time is "
        "charged with the parent's pages at that moment, so this column over-counts)"
    )


if __name__ == "__main__":
    main()
