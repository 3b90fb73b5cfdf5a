"""Training throughput on a GPU: fedsim against a standalone loop, and batched clients.

    python benchmarks/gpu_throughput.py [--quick] [--ray | --no-ray] [--cohorts 16,64,256] [--skip-a] [--skip-b] [--skip-c] [--skip-d] [--skip-e]

A device script: meant for a CUDA machine, but it also runs on a CPU (``--quick``
with tiny sizes, so it can be tried anywhere). It never asserts; every part catches
its own errors, prints them and the script goes on.

(a) resnet18 (CIFAR form) + MOON's projection head (``model.projection_head=true``) on
    synthetic-images 3x32x32, batch 64, bf16 autocast (``train.amp=true``; on CUDA
    only, as fedsim does): fedsim's training throughput in samples/s (10 parties,
    3 rounds, local engine, no evaluation, no checkpoints; samples of rounds 2..R over
    their ``round_time_s``) against a standalone loop in this script training the same
    model on the same data the same way (one model instance; per party: load the
    global weights, new SGD, the party's shuffled mini-batches; then FedAvg), timed
    with ``torch.cuda.synchronize``. Goal: fedsim/standalone >= 0.9. On CUDA (or with
    ``--ray``) also fedsim on Flower's Ray engine with ``engine.num_gpus=0.25``
    (4 clients share the GPU).
(b) If fedsim has the batched client path (``engine.batch_clients``), simple-cnn
    throughput with 16, 64 and 256 clients per round trained in lockstep
    (``engine.batch_clients=on``) against one at a time (``off``), and the max-abs
    difference between the two runs' final models (equal up to float rounding).
    Without that path it prints "batched path not available".
(c) The server's CPU work per round that (a) pays on top of training, for resnet18 +
    head with 10 clients (``--quick``: 2), timed with fedsim's own functions: encoding
    a reply (``state_to_record``) and decoding it (``record_to_state``), the
    non-finite screen (``all_finite``), the FedAvg average (``weighted_average``) and
    the model-heterogeneity measures of the round (``fedsim.server.evaluation.round_heterogeneity``).
(d) ResNet-18 with GroupNorm (``model.norm=group``), a cohort of 16 clients batched
    against one at a time (goal >= 3x), their weights' difference and the peak GPU
    memory (``torch.cuda.max_memory_allocated``).
(e) ``engine.deterministic: true``: two runs of resnet18 + head give identical weights.

(a) runs with and without ``train.amp``; (b) also prints the batched cohort's peak GPU
memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import _bench
import torch


def device_lines() -> list[str]:
    lines = [_bench.setup_line()]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        lines.append(
            f"device: cuda:0 {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, "
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, bf16 {torch.cuda.is_bf16_supported()}"
        )
    else:
        lines.append("device: cpu (no CUDA device: sizes are for a smoke test, numbers mean little)")
    return lines


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def fedsim_throughput(cfg: dict, out: Path) -> dict:
    """Run fedsim; samples/s over rounds 2..R from round_time_s (and from client time alone)."""
    import fedsim
    from fedsim.rundir.store import safe_torch_load

    res = fedsim.run(cfg, out=out)
    rows = _bench.read_jsonl(res.run_dir / "metrics.jsonl")
    later = rows[1:] or rows
    samples = sum(int(r["num_examples"]) for r in later) * int(cfg["train"]["epochs"])
    seconds = sum(float(r["round_time_s"]) for r in later)
    return {
        "samples_per_s": samples / seconds if seconds else float("nan"),
        "round_times": [float(r["round_time_s"]) for r in rows],
        "state": safe_torch_load(res.run_dir / "model.pt"),
    }


def standalone_throughput(cfg: dict, rounds: int) -> dict:
    """The same FedAvg rounds as a plain loop on the training device; samples/s over rounds 2..R."""
    from fedsim.inputs.run_inputs import resolve_device

    parties = _bench.load_parties(cfg)
    c = parties.cfg
    dev = resolve_device(c.engine.device)
    amp = "cuda" if (c.train.amp and dev.type == "cuda") else None
    x, y = parties.x.to(dev), parties.y.to(dev)
    idxs = [ix.to(dev) for ix in parties.indices]
    model = parties.build_model().to(dev)
    state = {k: v.to(dev) for k, v in parties.initial_state().items()}
    weights = [int(ix.numel()) for ix in idxs]
    times = []
    for rnd in range(1, rounds + 1):
        sync()
        t0 = time.perf_counter()
        states = []
        for p, ix in enumerate(idxs):
            gen = _bench.shuffle_generator(c.seed, rnd, p, device=dev)
            states.append(
                _bench.plain_party_update(
                    model,
                    state,
                    x,
                    y,
                    ix,
                    parties.mean,
                    parties.std,
                    lr=c.train.lr,
                    momentum=c.train.momentum,
                    weight_decay=c.train.weight_decay,
                    batch_size=c.train.batch_size,
                    epochs=int(c.train.epochs),
                    generator=gen,
                    amp_device=amp,
                )
            )
        state = _bench.weighted_average(states, weights)
        sync()
        times.append(time.perf_counter() - t0)
    samples = sum(weights) * int(c.train.epochs) * (rounds - 1)
    return {"samples_per_s": samples / sum(times[1:]), "round_times": times}


def fmt_times(ts: list[float]) -> str:
    return "[" + ", ".join(f"{t:.2f}" for t in ts) + "]"


# -------------------------------------------------------------------------- (a)


def part_a(quick: bool, with_ray: bool, tmp: Path) -> None:
    n_parties = 2 if quick else 10
    per_party = 32 if quick else 1000
    batch = 16 if quick else 64
    rounds = 2 if quick else 3
    print(
        f"\n(a) resnet18 + projection head, {n_parties} parties x {per_party} synthetic 3x32x32, batch {batch}, "
        f"{rounds} rounds; samples/s over rounds 2..{rounds}; bf16 autocast (train.amp) on CUDA only"
    )
    for amp in (True, False):
        cfg = _bench.base_config(
            data={"n_train": n_parties * per_party, "image_shape": [3, 32, 32], "num_classes": 10},
            partition={"n_parties": n_parties},
            model={"name": "resnet18", "projection_head": True},
            train={"lr": 0.01, "momentum": 0.9, "batch_size": batch, "amp": amp},
            federation={"rounds": rounds},
            engine={"threads": 0},
        )
        print(f"  train.amp={str(amp).lower()}")
        results: dict[str, dict] = {}
        try:
            st = standalone_throughput(cfg, rounds)
            results["standalone"] = st
            print(
                f"    standalone loop   {st['samples_per_s']:10.1f} samples/s  rounds {fmt_times(st['round_times'])} s"
            )
        except Exception as exc:
            print(f"    standalone loop failed: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=3)
        try:
            fr = fedsim_throughput(cfg, tmp / f"a-local-{amp}")
            results["fedsim"] = fr
            print(
                f"    fedsim local      {fr['samples_per_s']:10.1f} samples/s  rounds {fmt_times(fr['round_times'])} s"
            )
        except Exception as exc:
            print(f"    fedsim local failed: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=3)
        if with_ray and amp:
            try:
                ray_cfg = _bench.deep_update(
                    cfg,
                    {
                        "engine": {
                            "name": "ray",
                            "num_gpus": 0.25 if torch.cuda.is_available() else 0.0,
                            "num_cpus": 1.0,
                        }
                    },
                )
                rr = fedsim_throughput(ray_cfg, tmp / "a-ray")
                results["fedsim-ray"] = rr
                print(
                    f"    fedsim Ray        {rr['samples_per_s']:10.1f} samples/s  rounds {fmt_times(rr['round_times'])} s "
                    f"(engine.num_gpus={ray_cfg['engine']['num_gpus']})"
                )
            except Exception as exc:
                print(f"    fedsim Ray failed: {type(exc).__name__}: {exc}")
                traceback.print_exc(limit=3)
        if "standalone" in results and "fedsim" in results:
            ratio = results["fedsim"]["samples_per_s"] / results["standalone"]["samples_per_s"]
            print(f"    fedsim/standalone = {ratio:.2f} (goal >= 0.9: {'met' if ratio >= 0.9 else 'MISSED'})")
        if "fedsim-ray" in results and "fedsim" in results:
            ray, local = results["fedsim-ray"], results["fedsim"]
            diff = _bench.max_abs_diff(local["state"], ray["state"])
            print(
                f"    Ray (num_gpus=0.25) / local time = {local['samples_per_s'] / ray['samples_per_s']:.2f}; "
                f"max |diff| of models {diff:.2e} (goal <= 1e-5 in fp32; bf16 autocast may differ more)"
            )


def peak_mib() -> float:
    """The peak CUDA memory since the last reset, in MiB (nan on a CPU)."""
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# -------------------------------------------------------------------------- (b)


def batched_available() -> str | None:
    """None if fedsim has the batched client path, else why not."""
    from fedsim.schema.sections import EngineConfig

    if "batch_clients" not in {f.name for f in dataclasses.fields(EngineConfig)}:
        return "no engine.batch_clients key"
    try:
        import fedsim.engine.batched  # noqa: F401
    except ImportError as exc:
        return f"fedsim.engine.batched does not import ({exc})"
    return None


def batched_and_one_at_a_time(cfg: dict, out: Path, what: str = "") -> dict[str, dict]:
    """``cfg`` run one client at a time (``off``) and batched (``on``): each run's
    throughput, final model and peak GPU memory; a run that fails is printed and left out."""
    got: dict[str, dict] = {}
    for mode in ("off", "on"):
        try:
            reset_peak()
            got[mode] = fedsim_throughput(_bench.deep_update(cfg, {"engine": {"batch_clients": mode}}), out / mode)
            got[mode]["peak_mib"] = peak_mib()
        except Exception as exc:
            print(f"    {what}batch_clients={mode} failed: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=3)
    return got


def part_b(quick: bool, tmp: Path, cohorts: list[int]) -> None:
    print("\n(b) batched clients (engine.batch_clients=on) vs one at a time (off), simple-cnn")
    why = batched_available()
    if why is not None:
        print(f"    batched path not available ({why})")
        return
    per_client = 32 if quick else 128
    rounds = 2 if quick else 3
    print(
        f"    {per_client} synthetic 3x32x32 samples per client, batch 64, SGD lr 0.01 momentum 0.9, 1 epoch, "
        f"{rounds} rounds, every party in every round; samples/s over rounds 2..{rounds}"
    )
    rows = []
    for c in cohorts:
        cfg = _bench.base_config(
            data={"n_train": c * per_client, "image_shape": [3, 32, 32], "num_classes": 10},
            partition={"n_parties": c},
            model={"name": "simple-cnn"},
            train={"lr": 0.01, "momentum": 0.9, "batch_size": 64},
            federation={"rounds": rounds},
            engine={"threads": 0},
        )
        got = batched_and_one_at_a_time(cfg, tmp / f"b-{c}", f"{c} clients, ")
        if len(got) == 2:
            diff = _bench.max_abs_diff(got["off"]["state"], got["on"]["state"])
            speed = got["on"]["samples_per_s"] / got["off"]["samples_per_s"]
            rows.append(
                [
                    f"{c}",
                    f"{got['off']['samples_per_s']:.0f}",
                    f"{got['on']['samples_per_s']:.0f}",
                    f"{speed:.2f}",
                    f"{diff:.2e}",
                    f"{got['on']['peak_mib']:.0f}",
                ]
            )
            print(
                f"    {c} clients: off {fmt_times(got['off']['round_times'])} s, on {fmt_times(got['on']['round_times'])} s"
            )
    if rows:
        print(
            _bench.fmt_table(
                [
                    "clients/round",
                    "one at a time samples/s",
                    "batched samples/s",
                    "batched/one",
                    "max |diff| of models",
                    "batched peak MiB",
                ],
                rows,
            )
        )
        print("    goal: batched/one >= 10 at 64 clients; max |diff| <= 1e-5 (fp32)")


# -------------------------------------------------------------------------- (c)


def part_c(quick: bool) -> None:
    from fedsim.config.load import load_config
    from fedsim.models import build_model
    from fedsim.server.evaluation import round_heterogeneity
    from strategies.arrays import all_finite, record_to_state, state_to_record, weighted_average
    from strategies.strategy import ClientOutcome

    k = 2 if quick else 10
    cfg = load_config({"model": {"name": "resnet18", "projection_head": True}})
    torch.manual_seed(0)
    model = build_model(cfg.model, (3, 32, 32), 10)
    g = {n: t.detach().clone() for n, t in model.state_dict().items()}
    clients = [
        {n: (t + 0.01 * torch.randn_like(t)) if t.is_floating_point() else t.clone() for n, t in g.items()}
        for _ in range(k)
    ]
    mb = sum(t.numel() * t.element_size() for t in g.values()) / 2**20
    print(
        f"\n(c) server-side CPU work of one round, resnet18 + head ({mb:.0f} MB of weights), {k} clients, "
        f"torch threads {torch.get_num_threads()}"
    )

    def timed(fn, repeats: int = 3) -> float:
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    records = [state_to_record(c) for c in clients]
    decoded = [record_to_state(r) for r in records]
    agg = weighted_average(decoded, [1.0] * k)
    outcomes = [ClientOutcome(party=i, node_id=i, num_examples=1, metrics={}, state=s) for i, s in enumerate(decoded)]
    rows = [
        ["state_to_record (client reply), all clients", timed(lambda: [state_to_record(c) for c in clients])],
        ["record_to_state (server decode), all clients", timed(lambda: [record_to_state(r) for r in records])],
        ["all_finite screen, all clients", timed(lambda: [all_finite(s) for s in decoded])],
        ["weighted_average (float64)", timed(lambda: weighted_average(decoded, [1.0] * k))],
        ["round_heterogeneity", timed(lambda: round_heterogeneity(g, outcomes, agg))],
    ]
    total = sum(t for _, t in rows)
    table = [[name, f"{t * 1e3:.1f}"] for name, t in rows] + [["total", f"{total * 1e3:.1f}"]]
    print(_bench.fmt_table(["step", "ms"], table))


# -------------------------------------------------------------------------- (d)


def part_d(quick: bool, tmp: Path) -> None:
    """ResNet-18 with GroupNorm (model.norm=group): cohorts batched against one at a time."""
    c = 4 if quick else 16
    per_client = 16 if quick else 256
    size = 8 if quick else 32
    rounds = 2 if quick else 3
    print(
        f"\n(d) resnet18-GN (model.norm=group), {c} clients x {per_client} synthetic 3x{size}x{size}, batch 64, "
        f"fp32, {rounds} rounds: batched (engine.batch_clients=on) vs one at a time; goal >= 3x"
    )
    cfg = _bench.base_config(
        data={"n_train": c * per_client, "image_shape": [3, size, size], "num_classes": 10},
        partition={"n_parties": c},
        model={"name": "resnet18", "norm": "group"},
        train={"lr": 0.01, "momentum": 0.9, "batch_size": 64},
        federation={"rounds": rounds},
        engine={"threads": 0},
    )
    got = batched_and_one_at_a_time(cfg, tmp / "d")
    for mode, r in got.items():
        print(
            f"    batch_clients={mode:<3} {r['samples_per_s']:10.1f} samples/s  "
            f"rounds {fmt_times(r['round_times'])} s  peak {r['peak_mib']:.0f} MiB"
        )
    if len(got) == 2:
        speed = got["on"]["samples_per_s"] / got["off"]["samples_per_s"]
        diff = _bench.max_abs_diff(got["off"]["state"], got["on"]["state"])
        print(f"    batched/one = {speed:.2f} ({'met' if speed >= 3 else 'MISSED'}); max |diff| of models {diff:.2e}")


# -------------------------------------------------------------------------- (e)


def part_e(quick: bool, tmp: Path) -> None:
    """engine.deterministic=true: two runs of the same config give identical weights."""
    n, per_party, size = (2, 16, 8) if quick else (4, 64, 32)
    cfg = _bench.base_config(
        data={"n_train": n * per_party, "image_shape": [3, size, size], "num_classes": 10},
        partition={"n_parties": n},
        model={"name": "resnet18", "projection_head": True},
        train={"lr": 0.01, "momentum": 0.9, "batch_size": 32},
        federation={"rounds": 2},
        engine={"threads": 0, "deterministic": True},
    )
    print(f"\n(e) engine.deterministic=true, resnet18 + head, {n} parties, 2 rounds, run twice")
    try:
        a = fedsim_throughput(cfg, tmp / "e-1")["state"]
        b = fedsim_throughput(cfg, tmp / "e-2")["state"]
        diff = _bench.max_abs_diff(a, b)
        print(f"    max |diff| between the two runs {diff:.2e} ({'identical' if diff == 0 else 'NOT identical'})")
    except Exception as exc:
        print(f"    failed: {type(exc).__name__}: {exc}")
        traceback.print_exc(limit=3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke test)")
    ap.add_argument("--ray", dest="ray", action="store_true", default=None, help="also run (a) on the Ray engine")
    ap.add_argument("--no-ray", dest="ray", action="store_false")
    ap.add_argument("--cohorts", default=None, help="clients per round in (b) (default 16,64,256; --quick 4,8)")
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    ap.add_argument("--skip-c", action="store_true")
    ap.add_argument("--skip-d", action="store_true")
    ap.add_argument("--skip-e", action="store_true")
    args = ap.parse_args()
    with_ray = args.ray if args.ray is not None else torch.cuda.is_available()
    cohorts = [int(c) for c in args.cohorts.split(",")] if args.cohorts else ([4, 8] if args.quick else [16, 64, 256])
    logging.getLogger("flwr").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    for line in device_lines():
        print(line)
    with tempfile.TemporaryDirectory(prefix="fedsim-gpu-") as d:
        tmp = Path(d)
        if not args.skip_a:
            try:
                part_a(args.quick, with_ray, tmp)
            except Exception as exc:
                print(f"(a) failed: {type(exc).__name__}: {exc}")
        if not args.skip_b:
            try:
                part_b(args.quick, tmp, cohorts)
            except Exception as exc:
                print(f"(b) failed: {type(exc).__name__}: {exc}")
        if not args.skip_c:
            try:
                part_c(args.quick)
            except Exception as exc:
                print(f"(c) failed: {type(exc).__name__}: {exc}")
        if not args.skip_d:
            try:
                part_d(args.quick, tmp)
            except Exception as exc:
                print(f"(d) failed: {type(exc).__name__}: {exc}")
        if not args.skip_e:
            try:
                part_e(args.quick, tmp)
            except Exception as exc:
                print(f"(e) failed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
