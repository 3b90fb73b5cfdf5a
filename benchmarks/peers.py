"""Seconds per round of the same cross-device work on fedsim and its peers.

    python benchmarks/peers.py [--rounds R] [--repeats K] [--workloads 100x100,1000x10]
                               [--systems plain,fedsim,...] [--quick]

The work (issue 34's cross-device regime): real MNIST images (the 10,000 of t10k:
``data/mnist-t10k``'s 8,000 training and 2,000 test images together, built by
``examples/mnist_t10k.py``), NIID-Bench's simple CNN, an iid split into

* ``100x100``: 100 parties x 100 images, 10 drawn a round;
* ``1000x10``: 1,000 parties x 10 images, 100 drawn a round;

each client trains 1 local epoch, batch 32, plain SGD (lr 0.01), one torch thread per
process; the server averages the cohort's weights (FedAvg). No evaluation anywhere.

Systems, each in a fresh process (so nothing is shared between them):

``plain``       a plain PyTorch loop: one model; per client load the global weights,
                build SGD, one epoch, copy the state_dict; then the weighted mean.
``fedsim``      ``fedsim.run`` with its defaults (local engine, checkpoints every round,
                plots, model-heterogeneity metrics, clients.jsonl); only central
                evaluation is off (``federation.eval_every=0``, ``eval.train_sample=0``).
``fedsim-batched``  the same with ``engine.batch_clients=on`` (vmap over the cohort).
``fedsim-w2``   the same with ``engine.workers=2`` (two worker processes).
``pfl``         pfl-research (``pfl``): ``FederatedAveraging`` on its ``SimulatedBackend``
                with a ``PyTorchModel``, one process; central optimizer SGD(lr=1), i.e. the
                average of the clients' models, as FedAvg.
``pfl-2proc``   the same in two processes (``torch.distributed.run --nproc_per_node=2``:
                pfl-research splits each cohort between them and sums over gloo).
``flower``      vanilla Flower 1.42: a Message-API ``ClientApp`` running the plain loop
                and ``flwr.serverapp.strategy.FedAvg`` on Flower's Simulation Runtime
                with Ray, ``num_cpus=1`` a client: two actors on two cores.
``blazefl``     BlazeFL: needs Python >= 3.12 (3.0.0a1: 3.13, 3.0.0: 3.14); it is run
                when ``.peers/blazefl/bin/python`` exists, else reported as not measured.

pfl-research pins dp-accounting 0.5.1 (fedsim needs 0.6), so it lives in its own
virtual environment under the git-ignored ``.peers/``: ``bash benchmarks/peers_env.sh``
builds it (its own packages first, then torch from the environment that runs the
script). Systems without their environment are skipped with a note.

The driver interleaves the systems: for each repeat, each workload, each system in
turn; a run's round time is the median of its rounds 2..R (round 1 warms up), each
ratio is taken to the plain loop of the same repeat, and the table gives the median
over the repeats with the range.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # this checkout's fedsim, strategies and partitioners
PEERS = REPO / ".peers"
DATA_ROOT = REPO / "data" / "mnist-t10k"
MEAN, STD = 0.1307, 0.3081  # fedsim's MNIST normalisation
LR, BATCH, SEED = 0.01, 32, 0

WORKLOADS = {
    "100x100": {"parties": 100, "per_party": 100, "cohort": 10},
    "1000x10": {"parties": 1000, "per_party": 10, "cohort": 100},
}
SYSTEMS = ("plain", "fedsim", "fedsim-batched", "fedsim-w2", "pfl", "pfl-2proc", "flower", "blazefl")
VENV = {"pfl": "pfl", "pfl-2proc": "pfl", "blazefl": "blazefl"}  # systems that run in .peers/NAME
#: systems that train in several processes: their CPU time (this process's) is not the work's
SEVERAL_PROCESSES = ("fedsim-w2", "pfl-2proc", "flower")


# ------------------------------------------------------------------ the shared work


def read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_images(root: Path = DATA_ROOT) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 t10k images (uint8 (N, 1, 28, 28)) and labels: train then test files."""
    raw = root / "MNIST" / "raw"
    xs = [read_idx(raw / f"{p}-images-idx3-ubyte") for p in ("train", "t10k")]
    ys = [read_idx(raw / f"{p}-labels-idx1-ubyte") for p in ("train", "t10k")]
    return np.concatenate(xs)[:, None], np.concatenate(ys).astype(np.int64)


def party_indices(n_images: int, parties: int, per_party: int) -> list[np.ndarray]:
    """An iid split: party p holds ``per_party`` images of one seeded permutation."""
    perm = np.random.default_rng(SEED).permutation(n_images)
    return [perm[p * per_party : (p + 1) * per_party] for p in range(parties)]


def cohort(parties: int, size: int, server_round: int) -> list[int]:
    return sorted(np.random.default_rng([SEED, server_round]).choice(parties, size, replace=False).tolist())


class SimpleCNN(nn.Module):
    """NIID-Bench's simple CNN at 28x28 (fedsim's ``simple-cnn``: 6-16 convs, 120-84-10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(256, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def to_float(xb: torch.Tensor) -> torch.Tensor:
    return (xb.to(torch.float32) / 255.0 - MEAN) / STD


def local_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> None:
    """One epoch of plain SGD over (x, y) in shuffled batches of BATCH."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for pos in torch.split(torch.randperm(len(y), generator=gen), BATCH):
        loss = F.cross_entropy(model(to_float(x[pos])), y[pos])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# ---------------------------------------------------------------------- the systems


def _now() -> tuple[float, float]:
    """(wall clock, this process's CPU time): the CPU time is what a loaded machine
    disturbs least (it leaves out what other processes take from this one)."""
    return time.perf_counter(), time.process_time()


def _diffs(stamps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]


def run_plain(w: dict, rounds: int) -> list[tuple[float, float]]:
    x, y = (torch.from_numpy(a) for a in load_images())
    idx = [torch.from_numpy(i) for i in party_indices(len(y), w["parties"], w["per_party"])]
    torch.manual_seed(SEED)
    model = SimpleCNN()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    stamps = [_now()]
    for rnd in range(1, rounds + 1):
        acc = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in state.items()}
        chosen = cohort(w["parties"], w["cohort"], rnd)
        total = sum(len(idx[p]) for p in chosen)
        for p in chosen:
            model.load_state_dict(state)
            local_epoch(model, x[idx[p]], y[idx[p]], torch.Generator().manual_seed(rnd * 100003 + p))
            for k, v in model.state_dict().items():
                acc[k].add_(v, alpha=len(idx[p]) / total)
        state = {k: v.to(state[k].dtype) for k, v in acc.items()}
        stamps.append(_now())
    return _diffs(stamps)


EXTRA: list[str] = []  # --set: more fedsim overrides (for profiling the cost of a setting)
FEDSIM_VARIANTS = {"fedsim": (), "fedsim-batched": ("engine.batch_clients=on",), "fedsim-w2": ("engine.workers=2",)}


def run_fedsim(w: dict, rounds: int, system: str) -> list[tuple[float, float]]:
    import fedsim
    from fedsim.server.app import RunHooks

    n_images = w["parties"] * w["per_party"]
    cfg = {
        "seed": SEED,
        "data": {"dataset": "mnist", "root": str(_all_images_root(n_images))},
        "partition": {"scheme": "iid", "n_parties": w["parties"]},
        "model": {"name": "simple-cnn"},
        "train": {"epochs": 1, "batch_size": BATCH, "lr": LR},
        "federation": {"rounds": rounds, "fraction_fit": w["cohort"] / w["parties"], "eval_every": 0},
        "eval": {"train_sample": 0},
        "engine": {"threads": 1},
    }
    stamps: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="fedsim-peers-") as tmp:
        hooks = RunHooks(on_start=lambda *_: stamps.append(_now()), on_round=lambda _: stamps.append(_now()))
        fedsim.run(cfg, [*FEDSIM_VARIANTS[system], *EXTRA], out=Path(tmp) / "run", hooks=hooks)
    return _diffs(stamps)


def _all_images_root(n_images: int) -> Path:
    """A data.root whose training files hold all 10,000 t10k images (git-ignored data/),
    written once from data/mnist-t10k; its test files are the 2,000 test images again."""
    out = REPO / "data" / "mnist-t10k-all"
    raw = out / "MNIST" / "raw"
    if not (raw / "train-labels-idx1-ubyte").exists():
        x, y = load_images()
        raw.mkdir(parents=True, exist_ok=True)
        for name, arr in (("train-images-idx3-ubyte", x[:, 0]), ("train-labels-idx1-ubyte", y.astype(np.uint8))):
            _write_idx(raw / name, arr)
        src = DATA_ROOT / "MNIST" / "raw"
        for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            (raw / name).write_bytes((src / name).read_bytes())
    if n_images > 10000:
        raise SystemExit("at most 10,000 images")
    return out


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def run_pfl(w: dict, rounds: int) -> list[tuple[float, float]]:
    """pfl-research: FederatedAveraging on its SimulatedBackend, one process."""
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNTrainHyperParams
    from pfl.metrics import Metrics, Weighted
    from pfl.model.pytorch import PyTorchModel

    class PflCNN(SimpleCNN):  # pfl asks the module for its loss and metrics
        def loss(self, x, y, eval=False):
            self.eval() if eval else self.train()
            return F.cross_entropy(self(x), y)

        @torch.no_grad()
        def metrics(self, x, y, eval=False):
            self.eval() if eval else self.train()
            return {"loss": Weighted(float(F.cross_entropy(self(x), y, reduction="sum")), len(y))}

    x, y = load_images()
    xf = to_float(torch.from_numpy(x))
    yt = torch.from_numpy(y)
    idx = party_indices(len(y), w["parties"], w["per_party"])
    users = {p: Dataset((xf[i], yt[i]), user_id=str(p)) for p, i in enumerate(idx)}
    data = FederatedDataset(lambda uid: users[uid], get_user_sampler("random", list(users)))
    torch.manual_seed(SEED)
    module = PflCNN()
    model = PyTorchModel(module, torch.optim.SGD, torch.optim.SGD(module.parameters(), lr=1.0))
    stamps: list[tuple[float, float]] = []

    class Stamp(TrainingProcessCallback):
        def on_train_begin(self, *, model):
            stamps.append(_now())
            return Metrics()

        def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
            stamps.append(_now())
            return False, Metrics()

    params = NNAlgorithmParams(
        central_num_iterations=rounds,
        evaluation_frequency=10**9,
        train_cohort_size=w["cohort"],
        val_cohort_size=0,
    )
    train = NNTrainHyperParams(local_learning_rate=LR, local_num_epochs=1, local_batch_size=BATCH)
    FederatedAveraging().run(
        params, SimulatedBackend(training_data=data, val_data=None), model, train, None, callbacks=[Stamp()]
    )
    return _diffs(stamps)


def _process_cache() -> dict:
    """A dict that lives as long as the process (a Ray actor's: the ClientApp travels
    to it by value with each message, so a module global would not outlive one)."""
    import types

    mod = sys.modules.get("_peers_actor_cache")
    if mod is None:
        mod = sys.modules["_peers_actor_cache"] = types.ModuleType("_peers_actor_cache")
        mod.data = {}  # type: ignore[attr-defined]
    return mod.data  # type: ignore[attr-defined]


def run_flower(w: dict, rounds: int) -> list[tuple[float, float]]:
    """Vanilla Flower 1.42 on Ray: a ClientApp running :func:`local_epoch`, Flower's FedAvg."""
    import logging

    import ray
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    from fedsim.util.flower_compat import run_simulation_runtime

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        cache = _process_cache()
        if "x" not in cache:  # once per actor: the data, the split, one model
            torch.set_num_threads(1)
            x, y = load_images()
            cache["x"], cache["y"] = torch.from_numpy(x), torch.from_numpy(y)
            cache["idx"] = [torch.from_numpy(i) for i in party_indices(len(y), w["parties"], w["per_party"])]
            cache["model"] = SimpleCNN()
        model, i = cache["model"], cache["idx"][int(context.node_config["partition-id"])]
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        local_epoch(model, cache["x"][i], cache["y"][i], torch.Generator().manual_seed(int(i[0])))
        content = RecordDict(
            {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": len(i)})}
        )
        return Message(content=content, reply_to=msg)

    server = ServerApp()
    stamps: list[tuple[float, float]] = []

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(SEED)
        strategy = FedAvg(
            fraction_train=w["cohort"] / w["parties"],
            fraction_evaluate=0.0,
            min_train_nodes=w["cohort"],
            min_available_nodes=w["parties"],
        )
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(SimpleCNN().state_dict()),
            num_rounds=rounds,
            evaluate_fn=lambda rnd, arrays: stamps.append(_now()),
        )

    try:
        run_simulation_runtime(
            server_app=server,
            client_app=client,
            num_supernodes=w["parties"],
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False},
            },
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
    return _diffs(stamps)  # stamps[0]: evaluate_fn(0), before round 1


def run_blazefl(w: dict, rounds: int) -> list[tuple[float, float]]:
    raise SystemExit("BlazeFL is not measured here (see the module docstring)")


RUNNERS = {"plain": run_plain, **{k: run_fedsim for k in FEDSIM_VARIANTS}, "pfl": run_pfl, "flower": run_flower}
RUNNERS["blazefl"] = run_blazefl


def run_one(system: str, workload: str, rounds: int) -> list[tuple[float, float]]:
    torch.set_num_threads(1)
    runner = RUNNERS[system]
    w = WORKLOADS[workload]
    return runner(w, rounds, system) if runner is run_fedsim else runner(w, rounds)


# ------------------------------------------------------------------------- driver


def python_for(system: str) -> str | None:
    """The interpreter that runs ``system``: its own environment under .peers/, or this one."""
    if system not in VENV:
        return sys.executable
    exe = PEERS / VENV[system] / "bin" / "python"
    return str(exe) if exe.exists() else None


def measure(system: str, workload: str, rounds: int) -> dict[str, float] | str:
    """The medians of rounds 2..R of one fresh run (wall clock and the run's process's CPU
    time), or why there are none."""
    exe = python_for(system)
    if exe is None:
        return f"no environment .peers/{VENV[system]} (bash benchmarks/peers_env.sh)"
    cmd = [exe, __file__, "--one", system, workload, str(rounds)]
    if system == "pfl-2proc":  # torchrun: each process runs the pfl system, rank 0's times are taken
        cmd = [exe, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, "--one", "pfl"]
        cmd += [workload, str(rounds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"failed: {tail[0][:160]}"
    got = json.loads(lines[-1])
    return {"wall": statistics.median(got["round_times"][1:]), "cpu": statistics.median(got["cpu_times"][1:])}


def setup_line() -> str:
    import flwr

    try:
        load = "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "load average unknown"
    return (
        f"python {platform.python_version()}, torch {torch.__version__}, flwr {flwr.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, {load}"
    )


def summarise(results: dict, systems: list[str], workloads: list[str], clock: str) -> str:
    """Per system and workload: the median seconds a round over the repeats [range], and
    the median ratio to the plain loop of the same repeat [range]."""
    header = ["system"] + [f"{w}: s a round [range], x plain [range]" for w in workloads]
    rows = []
    for system in systems:
        row = [system]
        for wl in workloads:
            runs = results[(system, wl)]
            secs = [r[clock] for r in runs if isinstance(r, dict)]
            if clock == "cpu" and system in SEVERAL_PROCESSES:
                row.append("- (several processes)")
                continue
            if not secs:
                row.append(str(runs[-1]) if runs else "-")
                continue
            pairs = zip(runs, results[("plain", wl)])
            ratios = [s[clock] / p[clock] for s, p in pairs if isinstance(s, dict) and isinstance(p, dict)]
            cell = f"{statistics.median(secs):.3f} [{min(secs):.3f}-{max(secs):.3f}]"
            if ratios:
                cell += f", {statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6, help="rounds per run (round 1 is warm-up; default 6)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--quick", action="store_true", help="3 rounds, 1 repeat")
    ap.add_argument("--one", nargs=3, metavar=("SYSTEM", "WORKLOAD", "ROUNDS"), help=argparse.SUPPRESS)
    ap.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()
    EXTRA.extend(args.set)
    if args.one:
        system, workload, rounds = args.one
        times = run_one(system, workload, int(rounds))
        if os.environ.get("RANK", "0") == "0":  # torchrun's other ranks would print on the same line
            print(json.dumps({"round_times": [t[0] for t in times], "cpu_times": [t[1] for t in times]}), flush=True)
        return
    rounds, repeats = (3, 1) if args.quick else (args.rounds, args.repeats)
    systems = [s for s in args.systems.split(",") if s]
    if "plain" not in systems:
        systems.insert(0, "plain")
    workloads = [w for w in args.workloads.split(",") if w]
    print(setup_line())
    print(
        f"{rounds} rounds a run (median of rounds 2..{rounds}), {repeats} interleaved repeats, one torch thread a process"
    )
    results: dict = {(s, w): [] for s in systems for w in workloads}
    for rep in range(repeats):
        for wl in workloads:
            for system in systems:
                r = measure(system, wl, rounds)
                results[(system, wl)].append(r)
                got = f"wall {r['wall']:.3f} s, CPU {r['cpu']:.3f} s" if isinstance(r, dict) else r
                print(f"  repeat {rep + 1} {wl:<8} {system:<15} {got}", flush=True)
    for clock, what in (("wall", "wall clock"), ("cpu", "CPU time of the run's one process")):
        print(f"\nseconds a round, {what}:")
        print(summarise(results, systems, workloads, clock))
    print(setup_line())


if __name__ == "__main__":
    main()
