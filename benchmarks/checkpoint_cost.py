"""What checkpoints and per-client state cost: time to write/read one, and disk of a real run.

    python benchmarks/checkpoint_cost.py [--quick] [--repeats K] [--rounds R] [--skip-a] [--skip-b]

(a) One fedsim checkpoint of resnet18 (CIFAR form, 10 classes, 11.2 M parameters):
    ``fedsim.rundir.checkpoint.save_checkpoint`` / ``load_checkpoint`` with a RunStore in a
    temporary directory, the resnet18 ``state_dict`` as the global arrays and
    SCAFFOLD's server state of the same size (its control variate ``c`` over every
    parameter, through the real ``strategies.build(...).state_dict()``), a 100-row
    history, and ``--client-files`` party files of SCAFFOLD's c_i in the client-state
    store (snapshotted by hard links). Median of ``--repeats`` writes (each one a new
    round, so the ``keep=2`` pruning of older checkpoints is included) and reads;
    the checkpoint's size on disk. For reference, a bare ``torch.save`` (with and
    without fsync) / ``torch.load(weights_only=True)`` of the same payload to a file.

(b) The disk a real run uses: SCAFFOLD, 100 parties of synthetic-images 1x16x16 (50
    samples each, iid), simple-cnn, ``fraction_fit=0.1``, 1 epoch (SGD lr 0.1), 100 rounds
    (``--rounds``; ``--quick``: 10), one torch thread, everything else at fedsim's defaults (central
    evaluation every round, a checkpoint every round keeping 2, plots). The run
    directory is measured with ``du`` (and in Python, counting hard-linked files once)
    and broken down into client_state/, checkpoints/, records (metrics.jsonl,
    clients.jsonl) and the rest; the run's wall time is printed, and that of the same
    run with ``output.checkpoint_every=0`` (skip it with ``--no-compare``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import _bench
import torch


def disk_usage(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(bytes on disk, apparent bytes) per top-level part of ``root``; a hard-linked file counts once."""
    seen: set[tuple[int, int]] = set()
    disk: dict[str, int] = {}
    apparent: dict[str, int] = {}

    def part_of(rel: Path) -> str:
        top = rel.parts[0]
        if top in ("client_state", "checkpoints", "plots"):
            return top + "/"
        if top in ("metrics.jsonl", "clients.jsonl"):
            return "records (metrics.jsonl, clients.jsonl)"
        return "other (config, dataidxs, partition, summary, model.pt)"

    # client_state first: a checkpoint's hard links to it are then not counted again
    order = sorted(root.rglob("*"), key=lambda p: (0 if p.relative_to(root).parts[0] == "client_state" else 1, str(p)))
    for p in order:
        if not p.is_file() or p.is_symlink():
            continue
        st = p.stat()
        part = part_of(p.relative_to(root))
        apparent[part] = apparent.get(part, 0) + st.st_size
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        disk[part] = disk.get(part, 0) + st.st_blocks * 512
    return disk, apparent


def du_kib(path: Path) -> int | None:
    """``du -sk PATH`` (hard links counted once), or None where there is no du."""
    if shutil.which("du") is None:
        return None
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True)
    try:
        return int(out.stdout.split()[0])
    except (IndexError, ValueError):
        return None


def mb(n: float) -> str:
    return f"{n / 2**20:,.1f}"


# -------------------------------------------------------------------------- (a)


def part_a(repeats: int, client_files: int) -> None:
    import strategies
    from fedsim.config.load import load_config
    from fedsim.models import build_model
    from fedsim.rundir.checkpoint import load_checkpoint, save_checkpoint
    from fedsim.rundir.store import ClientStateStore, RunStore
    from fedsim.schema.identity import config_hash

    cfg = load_config(
        {
            "model": {"name": "resnet18"},
            "strategy": {"name": "scaffold"},
            "data": {"dataset": "synthetic-images", "image_shape": [3, 32, 32], "num_classes": 10},
        }
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, (3, 32, 32), 10)
    arrays = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    params = {n: p.detach() for n, p in model.named_parameters()}
    n_params = sum(p.numel() for p in params.values())
    strategy = strategies.build(cfg)
    strategy.c = {n: torch.randn_like(p) for n, p in params.items()}  # SCAFFOLD's server control variate
    strategy_state = strategy.state_dict()
    row = {f"metric_{i}": 0.5 for i in range(40)}
    row["test_confusion_matrix"] = [[10] * 10 for _ in range(10)]
    history = [dict(row, round=r) for r in range(1, 101)]
    h = config_hash(cfg)
    arrays_mb = sum(v.numel() * v.element_size() for v in arrays.values())
    print(
        f"(a) resnet18 (CIFAR form, 10 classes): {n_params / 1e6:.2f} M parameters, state_dict {mb(arrays_mb)} MB "
        f"({len(arrays)} entries); SCAFFOLD server state c: {mb(sum(v.numel() * 4 for v in strategy.c.values()))} MB; "
        f"100-row history; {client_files} party files of c_i in the client-state store"
    )

    with tempfile.TemporaryDirectory(prefix="fedsim-ckpt-") as tmp:
        store = RunStore(Path(tmp) / "run")
        store.root.mkdir(parents=True)
        cs = ClientStateStore(store.client_state)
        for party in range(client_files):
            cs.save(party, {n: torch.randn_like(p) for n, p in params.items()})
        writes, reads = [], []
        path = None
        for r in range(1, repeats + 1):
            t0 = time.perf_counter()
            path = save_checkpoint(store, r, arrays, strategy_state, history, 123.0, h, keep=2)
            writes.append(time.perf_counter() - t0)
        for _ in range(repeats):
            t0 = time.perf_counter()
            ck = load_checkpoint(path)
            reads.append(time.perf_counter() - t0)
        assert ck.round == repeats and set(ck.arrays) == set(arrays)
        disk, apparent = disk_usage(path)
        state_pt = (path / "state.pt").stat().st_size
        one_ckpt_kib = du_kib(path)
        # the reference: torch.save / torch.load of the same payload, no temp file, no fsync, no links
        payload = {"arrays": arrays, "strategy": strategy_state}
        ref_path = Path(tmp) / "ref.pt"
        ref_w, ref_r = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.save(payload, ref_path)
            ref_w.append(time.perf_counter() - t0)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.load(ref_path, map_location="cpu", weights_only=True)
            ref_r.append(time.perf_counter() - t0)
        ref_size = ref_path.stat().st_size
        ref_ws = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            with open(ref_path, "wb") as fh:
                torch.save(payload, fh)
                fh.flush()
                os.fsync(fh.fileno())
            ref_ws.append(time.perf_counter() - t0)
        shared = (
            sum(f.stat().st_size for f in (path / "client_state").glob("*") if f.stat().st_nlink > 1)
            if (path / "client_state").exists()
            else 0
        )

    rows = [
        [
            "fedsim save_checkpoint",
            f"{statistics.median(writes):.3f}",
            f"{min(writes):.3f}",
            f"{mb(state_pt)} (state.pt)",
        ],
        ["fedsim load_checkpoint", f"{statistics.median(reads):.3f}", f"{min(reads):.3f}", ""],
        ["torch.save (reference)", f"{statistics.median(ref_w):.3f}", f"{min(ref_w):.3f}", f"{mb(ref_size)}"],
        ["torch.save + fsync (reference)", f"{statistics.median(ref_ws):.3f}", f"{min(ref_ws):.3f}", f"{mb(ref_size)}"],
        ["torch.load (reference)", f"{statistics.median(ref_r):.3f}", f"{min(ref_r):.3f}", ""],
    ]
    print(_bench.fmt_table([f"operation ({repeats} repeats)", "median s", "min s", "file MB"], rows))
    du_text = f"{one_ckpt_kib / 1024:,.1f} MB by du" if one_ckpt_kib is not None else "du not available"
    print(
        f"    one checkpoint directory: {mb(sum(disk.values()))} MB on disk ({du_text}), of which "
        f"{mb(shared)} MB are hard links to the {client_files} client-state files (no new disk: a checkpoint adds "
        f"{mb(sum(disk.values()) - shared)} MB)"
    )
    print(
        f"    save_checkpoint / torch.save+fsync = {statistics.median(writes) / statistics.median(ref_ws):.2f}x; "
        f"save_checkpoint / torch.save = {statistics.median(writes) / statistics.median(ref_w):.2f}x; "
        f"load_checkpoint / torch.load = {statistics.median(reads) / statistics.median(ref_r):.2f}x"
    )
    print(
        "    fedsim writes one every output.checkpoint_every rounds (default 1), keeping output.keep_checkpoints (default 2)"
    )


# -------------------------------------------------------------------------- (b)


def part_b(rounds: int, compare: bool = True) -> None:
    import fedsim

    n_parties, per_party = 100, 50
    cfg = {
        "seed": 0,
        "data": {
            "dataset": "synthetic-images",
            "n_train": n_parties * per_party,
            "image_shape": [1, 16, 16],
            "num_classes": 10,
        },
        "partition": {"scheme": "iid", "n_parties": n_parties},
        "model": {"name": "simple-cnn"},
        "strategy": {"name": "scaffold"},
        # lr 0.1: with one local step a round, 0.01 leaves the model at chance after 100 rounds
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.1},
        "federation": {"rounds": rounds, "fraction_fit": 0.1},
        # one thread: two OpenMP threads on 2 shared cores stall badly when anything else runs
        "engine": {"threads": 1},
    }
    print(
        f"\n(b) SCAFFOLD, {n_parties} parties x {per_party} synthetic-images 1x16x16 (iid), simple-cnn, fraction_fit 0.1, "
        f"1 epoch, SGD lr 0.1, {rounds} rounds, engine.threads 1; fedsim defaults otherwise (eval every round, checkpoint every round "
        "keeping 2, plots)"
    )
    with tempfile.TemporaryDirectory(prefix="fedsim-ckpt-run-") as tmp:
        t0 = time.perf_counter()
        res = fedsim.run(cfg, out=Path(tmp) / "run")
        wall = time.perf_counter() - t0
        root = Path(res.run_dir)
        disk, apparent = disk_usage(root)
        total_kib = du_kib(root)
        n_state = len(list((root / "client_state").glob("party_*.pt")))
        n_ckpt = (
            len([d for d in (root / "checkpoints").iterdir() if d.is_dir()]) if (root / "checkpoints").exists() else 0
        )
        rows = _bench.read_jsonl(root / "metrics.jsonl")
        per_state = (
            statistics.median(f.stat().st_size for f in (root / "client_state").glob("party_*.pt")) if n_state else 0
        )
    print(
        f"    run took {wall:.1f} s (summary wall_time_s {res.summary.get('wall_time_s', float('nan')):.1f} s; "
        f"median round_time_s {statistics.median(r['round_time_s'] for r in rows) * 1e3:.0f} ms); "
        f"final test accuracy {res.summary.get('test_accuracy')}"
    )
    table = []
    for part in sorted(disk, key=lambda k: -disk[k]):
        table.append([part, mb(disk[part]), mb(apparent[part])])
    table.append(["total (hard links once)", mb(sum(disk.values())), mb(sum(apparent.values()))])
    print(_bench.fmt_table(["part of the run directory", "disk MB", "apparent MB"], table))
    du_text = f"du -sk: {total_kib / 1024:,.1f} MB" if total_kib is not None else "du not available"
    print(
        f"    {du_text}; {n_state} party files in client_state/ (median {per_state / 1024:.1f} KiB each), "
        f"{n_ckpt} checkpoint directories kept"
    )
    if compare:
        # the same run without checkpoints: what checkpointing every round costs in time
        with tempfile.TemporaryDirectory(prefix="fedsim-ckpt-run-") as tmp:
            t0 = time.perf_counter()
            res0 = fedsim.run(_bench.deep_update(cfg, {"output": {"checkpoint_every": 0}}), out=Path(tmp) / "run")
            wall0 = time.perf_counter() - t0
            rows0 = _bench.read_jsonl(Path(res0.run_dir) / "metrics.jsonl")
        m1 = statistics.median(r["round_time_s"] for r in rows)
        m0 = statistics.median(r["round_time_s"] for r in rows0)
        print(
            f"    the same run with output.checkpoint_every=0: {wall0:.1f} s, median round_time_s {m0 * 1e3:.0f} ms: "
            f"a checkpoint every round costs {(m1 - m0) * 1e3:.0f} ms a round here"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats, no party files, a 10-round run")
    ap.add_argument(
        "--repeats", type=int, default=None, help="repeats of each checkpoint write/read (default 5; --quick 3)"
    )
    ap.add_argument("--client-files", type=int, default=None, help="party files of c_i in (a) (default 4; --quick 0)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of the run in (b) (default 100; --quick 10)")
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    ap.add_argument("--no-compare", action="store_true", help="(b) without the second run that has no checkpoints")
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    client_files = args.client_files if args.client_files is not None else (0 if args.quick else 4)
    rounds = args.rounds or (10 if args.quick else 100)
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    print(_bench.setup_line())
    if not args.skip_a:
        part_a(repeats, client_files)
    if not args.skip_b:
        part_b(rounds, compare=not args.no_compare)


if __name__ == "__main__":
    main()
