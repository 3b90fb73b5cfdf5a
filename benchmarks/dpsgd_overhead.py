"""DP-SGD's cost in fedsim against Opacus alone (``privacy.mode: dpsgd``).

One process, one torch thread, the same data (synthetic 1x28x28 images, 10 parties x
500, NIID-Bench's simple CNN, batch 64, one local epoch, SGD lr 0.01 momentum 0.9):

(a) plain:   a plain PyTorch loop over the parties' shuffled batches (no DP);
(b) opacus:  Opacus alone: ``PrivacyEngine.make_private`` on each party's
             ``DataLoader`` (Poisson batches, per-sample clipping, noise), the same
             number of steps;
(c) fedsim:  ``fedsim.run`` without DP, the round time (training, aggregation, records);
(d) fedsim + dpsgd: ``fedsim.run`` with ``privacy.mode: dpsgd``.

Goal: fedsim adds at most 10% to Opacus alone: (d) <= 1.10 x (b). Also printed: the
privacy overhead of each, (b)/(a) and (d)/(c). Medians of ``--repeats`` (alternated);
``python benchmarks/dpsgd_overhead.py [--repeats 3] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _bench
import torch
from torch import nn

N_PARTIES, PER_PARTY, B, SIGMA, C = 10, 500, 64, 1.0, 1.0


def config(rounds: int, dp: bool) -> dict:
    cfg = _bench.base_config(
        data={"dataset": "synthetic-images", "n_train": N_PARTIES * PER_PARTY, "image_shape": [1, 28, 28]},
        partition={"scheme": "iid", "n_parties": N_PARTIES},
        model={"name": "simple-cnn"},
        train={"epochs": 1, "batch_size": B, "lr": 0.01, "momentum": 0.9},
        federation={"rounds": rounds},
    )
    cfg["eval"]["model_heterogeneity"] = False
    if dp:
        cfg["privacy"] = {"mode": "dpsgd", "noise_multiplier": SIGMA, "max_grad_norm": C}
    return cfg


def time_fedsim(rounds: int, dp: bool) -> float:
    import fedsim

    with tempfile.TemporaryDirectory(prefix="fedsim-bench-") as tmp:
        res = fedsim.run(config(rounds, dp), out=Path(tmp) / "run")
        rows = _bench.read_jsonl(res.run_dir / "metrics.jsonl")
    return statistics.median(float(r["round_time_s"]) for r in rows[1:] or rows)


def time_loops(dp: bool) -> float:
    """One round of the plain loop (dp=False) or of Opacus alone (dp=True) over every party."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    parties = _bench.load_parties(config(1, False))
    model = parties.build_model()
    model.load_state_dict(parties.initial_state())
    t0 = time.perf_counter()
    for p, idx in enumerate(parties.indices):
        local = parties.build_model()
        local.load_state_dict(model.state_dict())
        local.train()
        x = (parties.x[idx].float() / 255 - parties.mean[0]) / parties.std[0]
        y = parties.y[idx]
        opt = torch.optim.SGD(local.parameters(), lr=0.01, momentum=0.9)
        loader = DataLoader(TensorDataset(x, y), batch_size=B, shuffle=True, generator=torch.Generator().manual_seed(p))
        if dp:
            engine = PrivacyEngine(accountant="rdp")
            local, opt, loader = engine.make_private(
                module=local, optimizer=opt, data_loader=loader, noise_multiplier=SIGMA, max_grad_norm=C
            )
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            if len(yb):
                nn.functional.cross_entropy(local(xb), yb).backward()
            opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(_bench.setup_line())
    times: dict[str, list[float]] = {"plain": [], "opacus": [], "fedsim": [], "fedsim+dpsgd": []}
    for _ in range(args.repeats):
        times["plain"].append(time_loops(False))
        times["opacus"].append(time_loops(True))
        times["fedsim"].append(time_fedsim(args.rounds, False))
        times["fedsim+dpsgd"].append(time_fedsim(args.rounds, True))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:>14}: {med[k]:.3f} s a round  ({', '.join(f'{t:.3f}' for t in v)})")
    opacus_ratio = med["opacus"] / med["plain"]
    fedsim_ratio = med["fedsim+dpsgd"] / med["fedsim"]
    print(f"Opacus's own overhead (opacus / plain):           {opacus_ratio:.2f}x")
    print(f"fedsim's DP-SGD overhead (fedsim+dpsgd / fedsim):  {fedsim_ratio:.2f}x")
    print(
        f"fedsim+dpsgd / opacus alone:                       {med['fedsim+dpsgd'] / med['opacus']:.3f}x (goal <= 1.10)"
    )


if __name__ == "__main__":
    main()
