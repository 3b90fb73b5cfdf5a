"""Seconds per FedAvg round: a plain PyTorch loop, fedsim's local engine, vanilla Flower on Ray.

    python benchmarks/engine_overhead.py [--quick] [--rounds R] [--repeats K] [--workload a|b|all]
                                         [--no-ray] [--no-workers2] [--profile] [--flower-arrays]

Two workloads, each timed as ROUND TIME in this one process:

(a) simple-cnn, 10 parties x 500 synthetic 3x32x32 images (iid), 1 epoch, batch 64,
    SGD lr 0.01 momentum 0.9, no evaluation, one CPU thread: compute-bound;
(b) multinomial logistic regression (``mlp`` with ``model.hidden=[]``) on 784 features
    (synthetic 1x28x28 images), 100 parties x 100 samples, 10 classes, 1 epoch,
    batch 64: overhead-bound (two tiny steps per party).

For each workload:

(i)   plain: the same data tensors and the same dataidxs as fedsim's run, one model
      instance; per party: load the global weights, build SGD, one epoch over the
      party's shuffled mini-batches (the shuffle fedsim draws for that party and
      round), copy the state_dict; then the weighted average. The physical limit.
(ii)  fedsim: ``fedsim.run`` on the local engine (eval_every=0, checkpoint_every=0,
      plots off, train_sample=0, engine.threads=1); ``round_time_s`` from metrics.jsonl.
(iii) Flower-Ray: a minimal Flower 1.42 Message-API app written here (``ClientApp``
      with ``@app.train()`` running the same plain loop on data loaded once per
      actor; ``ServerApp`` running ``flwr.serverapp.strategy.FedAvg(...).start`` with
      a timestamp per round in ``evaluate_fn``) on Flower's Simulation Runtime (what
      ``flwr.simulation.run_simulation``, now deprecated, runs: the Ray engine's
      ``fedsim.util.flower_compat.run_simulation_runtime``) with ``client_resources = {num_cpus: 1,
      num_gpus: 0}``: on 2 cores that is 2 Ray actors training in parallel, each with
      one thread (OMP_NUM_THREADS=1), while (i) and (ii) use one core. For the same
      two cores, fedsim is also run with ``engine.workers=2`` (two worker processes).
      On (b) Flower also runs with its default ``num_cpus=2`` (one actor here: the
      single core fedsim's default uses), and fedsim with ``engine.batch_clients=on``
      (the cohort's 100 logistic regressions trained in lockstep with ``torch.func.vmap``:
      on a CPU this pays off for tiny overhead-bound models, not for convolutions).

The per-round number is the median of rounds 2..R (round 1 includes warm-up: the
ClientApp's runtime, Ray's actors, allocator warm-up). (i) and (ii) are measured
``--repeats`` times, alternating, and the fastest repeat is reported (the least
disturbed by other load on the machine); every repeat is printed.

Goals: fedsim/plain <= 1.10 on (a) and <= 1.5 on (b); Flower-Ray/fedsim >= 5 on (b)
(printed for every fedsim setting against both Flower settings).
The plain loop and fedsim draw the same initial weights and the same shuffles, so
their final models must agree (printed as a max-abs difference).
"""

from __future__ import annotations

import os

# before torch is imported: one OpenMP thread here and in the Ray actors this
# process starts (they inherit the environment)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a FutureWarning of Ray 2.55

import argparse  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from collections import OrderedDict  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any

import _bench  # noqa: E402
import torch  # noqa: E402

WORKLOADS: dict[str, dict[str, Any]] = {
    "a": {
        "title": "(a) simple-cnn, 10 parties x 500 imgs 3x32x32",
        "config": _bench.base_config(
            data={"n_train": 5000, "image_shape": [3, 32, 32], "num_classes": 10},
            partition={"n_parties": 10},
            model={"name": "simple-cnn"},
            train={"lr": 0.01, "momentum": 0.9},
        ),
        "goal_plain": 1.10,
        "goal_ray": None,
    },
    "b": {
        "title": "(b) logistic regression, 100 parties x 100 x 784",
        "config": _bench.base_config(
            data={"n_train": 10000, "image_shape": [1, 28, 28], "num_classes": 10},
            partition={"n_parties": 100},
            model={"name": "mlp", "hidden": []},
            train={"lr": 0.01, "momentum": 0.9},
        ),
        "goal_plain": 1.5,
        "goal_ray": 5.0,
        "batched": True,  # also fedsim with engine.batch_clients=on (vmap over the cohort, on CPU)
    },
}


# ----------------------------------------------------------------------- (i) plain


def run_plain(cfg_dict: Mapping, rounds: int) -> tuple[list[float], OrderedDict[str, torch.Tensor]]:
    """Seconds of each round of the plain loop, and the final global state."""
    parties = _bench.load_parties(cfg_dict)
    cfg = parties.cfg
    tr = cfg.train
    model = parties.build_model()
    state = parties.initial_state()
    weights = [int(ix.numel()) for ix in parties.indices]
    times = []
    for rnd in range(1, rounds + 1):
        t0 = time.perf_counter()
        states = []
        for p, idx in enumerate(parties.indices):
            gen = _bench.shuffle_generator(cfg.seed, rnd, p)
            states.append(
                _bench.plain_party_update(
                    model,
                    state,
                    parties.x,
                    parties.y,
                    idx,
                    parties.mean,
                    parties.std,
                    lr=tr.lr,
                    momentum=tr.momentum,
                    weight_decay=tr.weight_decay,
                    batch_size=tr.batch_size,
                    epochs=int(tr.epochs),
                    generator=gen,
                )
            )
        state = _bench.weighted_average(states, weights)
        times.append(time.perf_counter() - t0)
    return times, state


# ---------------------------------------------------------------------- (ii) fedsim


def run_fedsim(cfg_dict: Mapping, rounds: int, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """fedsim.run on the local engine: round_time_s per round, client time per round, final state."""
    import fedsim
    from fedsim.rundir.store import safe_torch_load

    cfg = _bench.deep_update(dict(cfg_dict), {"federation": {"rounds": rounds}})
    with tempfile.TemporaryDirectory(prefix="fedsim-bench-") as tmp:
        res = fedsim.run(cfg, list(overrides), out=Path(tmp) / "run")
        rows = _bench.read_jsonl(res.run_dir / "metrics.jsonl")
        clients = _bench.read_jsonl(res.run_dir / "clients.jsonl")
        final = safe_torch_load(res.run_dir / "model.pt")
    round_times = [float(r["round_time_s"]) for r in rows]
    client_times = [
        sum(float(c.get("time_s") or 0.0) for c in clients if c["round"] == r["round"] and c.get("stage") == "train")
        for r in rows
    ]
    return {"round_times": round_times, "client_times": client_times, "state": final}


# ------------------------------------------------------------------ (iii) Flower-Ray


def _process_cache() -> dict:
    """A dict that lives as long as this process (a Ray actor's, for the ClientApp).

    Flower's Ray backend ships the ClientApp to an actor with each message, and an app
    defined in ``__main__`` travels by value, so a module-level dict of this script
    is not guaranteed to outlive a message in the actor; ``sys.modules`` is the
    process's own.
    """
    mod = sys.modules.get("_fedsim_bench_actor_cache")
    if mod is None:
        mod = types.ModuleType("_fedsim_bench_actor_cache")
        mod.data = {}  # type: ignore[attr-defined]
        sys.modules["_fedsim_bench_actor_cache"] = mod
    return mod.data  # type: ignore[attr-defined]


def make_vanilla_client_app(cfg_dict: Mapping):
    """A minimal Flower ClientApp: plain PyTorch training of the party's data."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()
    cfg_dict = dict(cfg_dict)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cache = _process_cache()
        if "parties" not in cache:  # once per actor: data, partition, one model instance
            torch.set_num_threads(1)
            parties = _bench.load_parties(cfg_dict)
            cache["parties"] = parties
            cache["model"] = parties.build_model()
        parties, model = cache["parties"], cache["model"]
        tr = parties.cfg.train
        pid = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        idx = parties.indices[pid]
        state = _bench.plain_party_update(
            model,
            msg.content["arrays"].to_torch_state_dict(),
            parties.x,
            parties.y,
            idx,
            parties.mean,
            parties.std,
            lr=tr.lr,
            momentum=tr.momentum,
            weight_decay=tr.weight_decay,
            batch_size=tr.batch_size,
            epochs=int(tr.epochs),
            generator=_bench.shuffle_generator(parties.cfg.seed, rnd, pid),
        )
        content = RecordDict(
            {"arrays": ArrayRecord(state), "metrics": MetricRecord({"num-examples": int(idx.numel())})}
        )
        return Message(content=content, reply_to=msg)

    return app


def make_vanilla_server_app(n: int, rounds: int, initial: Mapping[str, torch.Tensor], stamps: list[float], final: dict):
    from flwr.app import ArrayRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    app = ServerApp()

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        stamps.append(time.perf_counter())
        final["state"] = arrays.to_torch_state_dict()
        return None

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
        strategy.start(
            grid=grid, initial_arrays=ArrayRecord(OrderedDict(initial)), num_rounds=rounds, evaluate_fn=evaluate_fn
        )

    return app


def run_flower_ray(cfg_dict: Mapping, rounds: int, num_cpus: float = 1) -> dict[str, Any]:
    """Round times of vanilla Flower on Ray (evaluate_fn timestamps), and the final state.
    ``num_cpus``: each ClientApp's Ray resources (Flower's default is 2: one actor on
    a 2-core machine; 1: one actor per core)."""
    import ray

    from fedsim.util.flower_compat import run_simulation_runtime

    parties = _bench.load_parties(cfg_dict)
    n = parties.cfg.partition.n_parties
    stamps: list[float] = []
    final: dict = {}
    t0 = time.perf_counter()
    try:
        run_simulation_runtime(
            server_app=make_vanilla_server_app(n, rounds, parties.initial_state(), stamps, final),
            client_app=make_vanilla_client_app(cfg_dict),
            num_supernodes=n,
            backend_config={
                "client_resources": {"num_cpus": num_cpus, "num_gpus": 0.0},
                # quiet, and no dashboard process competing for the 2 cores
                "init_args": {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False},
            },
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
    total = time.perf_counter() - t0
    # stamps[0]: evaluate_fn(0) before round 1; stamps[k]: after round k
    round_times = [b - a for a, b in zip(stamps, stamps[1:])]
    if len(round_times) != rounds:
        raise RuntimeError(f"Flower-Ray ran {len(round_times)} of {rounds} rounds")
    return {"round_times": round_times, "state": final.get("state"), "total": total}


# ------------------------------------------------------------------------- driver


def fmt_times(ts: list[float]) -> str:
    return "[" + ", ".join(f"{t:.3f}" for t in ts) + "]"


def measure(key: str, rounds: int, repeats: int, with_ray: bool, workers2: bool) -> dict[str, Any]:
    w = WORKLOADS[key]
    cfg = w["config"]
    print(f"\n{w['title']}: {rounds} rounds, median of rounds 2..{rounds}")
    out: dict[str, Any] = {"title": w["title"], "goal_plain": w["goal_plain"], "goal_ray": w["goal_ray"]}
    plain_best = fedsim_best = float("inf")
    plain_state = fedsim_state = None
    fedsim_client = float("nan")
    for rep in range(repeats):
        pt, plain_state = run_plain(cfg, rounds)
        fr = run_fedsim(cfg, rounds)
        fedsim_state = fr["state"]
        p, f = _bench.steady(pt), _bench.steady(fr["round_times"])
        print(
            f"  repeat {rep + 1}: plain {fmt_times(pt)} s -> {p:.3f};  fedsim {fmt_times(fr['round_times'])} s -> {f:.3f}"
            f"  (fedsim client training {fmt_times(fr['client_times'])})"
        )
        plain_best = min(plain_best, p)
        if f < fedsim_best:
            fedsim_best, fedsim_client = f, _bench.steady(fr["client_times"])
    out["plain"], out["fedsim"], out["fedsim_client"] = plain_best, fedsim_best, fedsim_client
    out["diff"] = _bench.max_abs_diff(plain_state, fedsim_state)
    print(f"  final model, max |plain - fedsim| = {out['diff']:.3g} (same initial weights and shuffles: expect 0)")
    out["workers2"] = float("nan")
    if workers2:
        try:  # the same two cores Flower-Ray gets: two worker processes, one thread each
            fw = run_fedsim(cfg, rounds, ("engine.workers=2", "engine.threads=1"))
            out["workers2"] = _bench.steady(fw["round_times"])
            print(
                f"  fedsim engine.workers=2 {fmt_times(fw['round_times'])} s -> {out['workers2']:.3f}"
                f"  (max |plain - fedsim workers=2| = {_bench.max_abs_diff(plain_state, fw['state']):.3g})"
            )
        except Exception as exc:
            print(f"  fedsim engine.workers=2 failed: {type(exc).__name__}: {exc}")
    out["batched"] = float("nan")
    if w.get("batched"):
        fb = run_fedsim(cfg, rounds, ("engine.batch_clients=on",))
        out["batched"] = _bench.steady(fb["round_times"])
        print(
            f"  fedsim engine.batch_clients=on {fmt_times(fb['round_times'])} s -> {out['batched']:.3f}"
            f"  (max |plain - fedsim batched| = {_bench.max_abs_diff(plain_state, fb['state']):.3g})"
        )
    out["ray"] = out["ray1"] = float("nan")
    if with_ray:
        # one actor per core (what the 2-core fedsim runs get); where the goal is against
        # Flower, also its default client_resources (num_cpus=2: one actor here, the one
        # core fedsim's default uses)
        for name, cpus in (("ray", 1), ("ray1", 2)) if w["goal_ray"] is not None else (("ray", 1),):
            try:
                rr = run_flower_ray(cfg, rounds, cpus)
                out[name] = _bench.steady(rr["round_times"])
                d = _bench.max_abs_diff(plain_state, rr["state"]) if rr["state"] is not None else float("nan")
                print(
                    f"  Flower-Ray num_cpus={cpus} {fmt_times(rr['round_times'])} s -> {out[name]:.3f}  (whole run_simulation "
                    f"{rr['total']:.1f} s; max |plain - Flower| = {d:.3g}, Flower averages in its own order and precision)"
                )
            except Exception as exc:  # keep the other numbers
                print(f"  Flower-Ray num_cpus={cpus} failed: {type(exc).__name__}: {exc}")
    return out


TORCH_TRAINING = re.compile(r"/torch/(nn|optim|autograd|_tensor\.py|utils/_contextlib|_dynamo|_compile)")


def _is_torch_training_op(func: tuple) -> bool:
    """A torch kernel (C builtin) or torch's own nn/optim/autograd machinery: the training work itself."""
    filename, _, name = func
    if filename == "~":
        return "torch" in name or "_EngineBase" in name
    return bool(TORCH_TRAINING.search(filename.replace("\\", "/")))


def profile_round(key: str = "b", top: int = 15) -> None:
    """cProfile one steady-state fedsim round (round 2) of workload ``key``; print the top functions."""
    import cProfile
    import pstats

    import fedsim
    from fedsim.server.app import RunHooks

    cfg = _bench.deep_update(WORKLOADS[key]["config"], {"federation": {"rounds": 3}})
    prof = cProfile.Profile()

    def on_round(row: dict) -> None:  # called after a round's records: round 2 lies between
        if row["round"] == 1:
            prof.enable()
        elif row["round"] == 2:
            prof.disable()
            print(
                f"  round 2 under the profiler: round_time_s {row['round_time_s'] * 1e3:.1f} ms (the profiler inflates it)"
            )

    print(
        f"\ncProfile of one fedsim round of {WORKLOADS[key]['title']} (round 2; from the end of round 1's records "
        "to the end of round 2's)"
    )
    with tempfile.TemporaryDirectory(prefix="fedsim-bench-") as tmp:
        fedsim.run(cfg, out=Path(tmp) / "run", hooks=RunHooks(on_round=on_round))
    stats = pstats.Stats(prof)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values())
    torch_ops = sum(v[2] for f, v in entries.items() if _is_torch_training_op(f))
    print(
        f"  profiled {total * 1e3:.1f} ms of tottime; torch kernels and nn/optim/autograd machinery {torch_ops * 1e3:.1f} ms; "
        f"the rest {(total - torch_ops) * 1e3:.1f} ms"
    )
    rows = sorted(((f, v) for f, v in entries.items() if not _is_torch_training_op(f)), key=lambda fv: -fv[1][2])[:top]
    table = []
    for (filename, line, name), (_cc, nc, tt, ct, _) in rows:
        where = name if filename == "~" else f"{_short(filename)}:{line}({name})"
        table.append([where, f"{nc}", f"{tt * 1e3:.1f}", f"{ct * 1e3:.1f}"])
    print(f"  top {top} by tottime outside torch's training ops:")
    print("  " + _bench.fmt_table(["function", "calls", "tottime ms", "cumtime ms"], table).replace("\n", "\n  "))
    ours = sorted(
        ((f, v) for f, v in entries.items() if re.search(r"(fedsim|strategies|flwr)/|torch/random", f[0])),
        key=lambda fv: -fv[1][3],
    )[:top]
    table = [
        [f"{_short(fn)}:{ln}({nm})", f"{v[1]}", f"{v[2] * 1e3:.1f}", f"{v[3] * 1e3:.1f}"] for (fn, ln, nm), v in ours
    ]
    print(f"  top {top} fedsim/strategies/flwr functions (and torch.manual_seed) by cumtime:")
    print("  " + _bench.fmt_table(["function", "calls", "tottime ms", "cumtime ms"], table).replace("\n", "\n  "))


def _short(filename: str) -> str:
    f = filename.replace("\\", "/")
    for marker in ("site-packages/", "/fedsim/", "/strategies/", "/lib/python"):
        i = f.find(marker)
        if i >= 0:
            rest = f[i + len(marker) :]
            return {"/fedsim/": "fedsim/", "/strategies/": "strategies/"}.get(marker, "") + (
                rest.split("/", 1)[1] if marker == "/lib/python" else rest
            )
    return f


def compare_array_codecs(repeats: int) -> None:
    """Workload (b) with strategies.arrays' cached .npy headers against Flower's own
    conversions (np.save / np.load per array), alternating; the median round each."""
    import statistics

    import numpy as np
    from flwr.app import Array

    import strategies.arrays as sa

    cached = (sa.array_from_numpy, sa.array_to_numpy)
    flower = (lambda nd: Array(np.ascontiguousarray(nd)), lambda arr: np.array(arr.numpy(), copy=True))
    times: dict[str, list[float]] = {"cached headers": [], "Flower's Array": []}
    try:
        for _ in range(repeats):
            for name, (to_arr, to_nd) in zip(times, (cached, flower)):
                sa.array_from_numpy, sa.array_to_numpy = to_arr, to_nd
                times[name].append(statistics.median(run_fedsim(WORKLOADS["b"]["config"], 4)["round_times"][1:]))
    finally:
        sa.array_from_numpy, sa.array_to_numpy = cached
    best = {k: min(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"  {k:<16} best {best[k] * 1e3:6.1f} ms a round  (repeats: {', '.join(f'{x * 1e3:.1f}' for x in v)})")
    ratio = best["Flower's Array"] / best["cached headers"]
    print(f"  Flower's Array / cached headers: {ratio:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds, 1 repeat")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per run (default 3; --quick 2)")
    ap.add_argument(
        "--repeats", type=int, default=None, help="alternating repeats of plain and fedsim (default 2; --quick 1)"
    )
    ap.add_argument("--workload", choices=["a", "b", "all"], default="all")
    ap.add_argument("--no-ray", action="store_true", help="skip vanilla Flower on Ray")
    ap.add_argument("--profile", action="store_true", help="also cProfile one fedsim round of workload (b)")
    ap.add_argument(
        "--no-workers2", action="store_true", help="skip fedsim with engine.workers=2 (Flower-Ray's two cores)"
    )
    ap.add_argument(
        "--flower-arrays",
        action="store_true",
        help="only: fedsim's round on (b) with its .npy header cache against Flower's own Array(nd) / Array.numpy()",
    )
    args = ap.parse_args()
    if args.flower_arrays:
        compare_array_codecs(args.repeats or 3)
        return
    rounds = args.rounds or (2 if args.quick else 3)
    repeats = args.repeats or (1 if args.quick else 2)
    if rounds < 2:
        ap.error("--rounds must be >= 2 (round 1 is warm-up)")
    torch.set_num_threads(1)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    print(_bench.setup_line())
    print(
        "plain and fedsim: one process, one thread, one core; Flower-Ray: run_simulation, "
        "client_resources num_cpus=1 -> one Ray actor per core, OMP_NUM_THREADS=1"
    )
    keys = ["a", "b"] if args.workload == "all" else [args.workload]
    results = [measure(k, rounds, repeats, not args.no_ray, not args.no_workers2) for k in keys]

    print("\nseconds per round (median of rounds 2..R; plain and fedsim: best of the repeats)")
    rows = []
    for r in results:
        ratio = r["fedsim"] / r["plain"]
        ray_ratio = r["ray"] / r["fedsim"]
        goal_p = f"<= {r['goal_plain']:.2f}: {'met' if ratio <= r['goal_plain'] else 'MISSED'}"
        if r["goal_ray"] is None or ray_ratio != ray_ratio:
            goal_r = "-"
        else:
            goal_r = f">= {r['goal_ray']:.0f}: {'met' if ray_ratio >= r['goal_ray'] else 'MISSED'}"
        rows.append(
            [
                r["title"],
                f"{r['plain']:.3f}",
                f"{r['fedsim']:.3f}",
                f"{r['ray']:.3f}",
                f"{ratio:.2f}",
                goal_p,
                f"{ray_ratio:.1f}",
                goal_r,
                f"{r['workers2']:.3f}",
                f"{r['ray'] / r['workers2']:.1f}",
            ]
        )
    print(
        _bench.fmt_table(
            [
                "workload",
                "plain s",
                "fedsim s",
                "Flower-Ray s",
                "fedsim/plain",
                "goal",
                "Ray/fedsim",
                "goal",
                "fedsim 2 workers s",
                "Ray/2 workers",
            ],
            rows,
        )
    )
    print("  (plain, fedsim: one core; Flower-Ray and fedsim 2 workers: two processes on the two cores)")
    for r in results:
        if r["batched"] == r["batched"]:  # not NaN
            print(f"\n{r['title']}, the other settings, seconds per round:")
            rows = [
                [
                    "fedsim, engine.batch_clients=on (one core)",
                    f"{r['batched']:.3f}",
                    f"{r['batched'] / r['plain']:.2f}",
                    f"{r['ray'] / r['batched']:.1f}",
                    f"{r['ray1'] / r['batched']:.1f}",
                ],
                [
                    "fedsim, sequential (one core)",
                    f"{r['fedsim']:.3f}",
                    f"{r['fedsim'] / r['plain']:.2f}",
                    f"{r['ray'] / r['fedsim']:.1f}",
                    f"{r['ray1'] / r['fedsim']:.1f}",
                ],
                [
                    "fedsim, engine.workers=2 (two cores)",
                    f"{r['workers2']:.3f}",
                    f"{r['workers2'] / r['plain']:.2f}",
                    f"{r['ray'] / r['workers2']:.1f}",
                    f"{r['ray1'] / r['workers2']:.1f}",
                ],
                [
                    "Flower-Ray, num_cpus=1 (two actors, two cores)",
                    f"{r['ray']:.3f}",
                    f"{r['ray'] / r['plain']:.2f}",
                    "1.0",
                    "-",
                ],
                [
                    "Flower-Ray, default num_cpus=2 (one actor)",
                    f"{r['ray1']:.3f}",
                    f"{r['ray1'] / r['plain']:.2f}",
                    "-",
                    "1.0",
                ],
            ]
            print(_bench.fmt_table(["setting", "s", "x plain", "Ray 2 actors / this", "Ray 1 actor / this"], rows))
    for r in results:
        outside = r["fedsim"] - r["fedsim_client"]
        print(
            f"  {r['title'][:3]} fedsim round {r['fedsim'] * 1e3:.1f} ms = client training {r['fedsim_client'] * 1e3:.1f} ms "
            f"(clients.jsonl time_s) + {outside * 1e3:.1f} ms outside the clients; plain {r['plain'] * 1e3:.1f} ms"
        )
    if args.profile:
        profile_round("b")


if __name__ == "__main__":
    main()
