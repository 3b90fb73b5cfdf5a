"""Per-party evaluation (``eval.local_test``) against one model on the same samples.

    python benchmarks/party_eval.py [--parties 100] [--repeats 5] [--quick] [--device cuda]

A FedPer run of one round on MNIST-shaped synthetic images (simple-cnn, 100 parties,
``eval.local_test: split`` at 0.2) leaves 100 personal heads in the client-state
store. On the CPU the script then times, in one process, medians of ``--repeats``:

* ``one model``: the global model on the concatenation of every party's local test
  samples (``fedsim.client.training.evaluate``, ``eval.batch_size``): the reference;
* ``local``: fedsim's per-party evaluation of the global model (every party's
  confusion matrix and loss; one pooled pass);
* ``personal``: every party's own model (its head from the client-state store on
  disk, loaded and evaluated one party at a time: the CPU path).

Goal: each per-party mode costs at most 1.3x the reference.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _bench import setup_line

import fedsim
from fedsim.client.training import evaluate
from fedsim.inputs.run_inputs import RunSettings, experiment_for
from fedsim.rundir.store import ClientStateStore
from fedsim.server.party_eval import PartyEvaluator

GOAL = 1.3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parties", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="20 parties, 2 repeats")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: the per-party models then run as one vmap pass")
    args = ap.parse_args()
    device = torch.device(args.device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    parties, repeats = (20, 2) if args.quick else (args.parties, args.repeats)
    torch.set_num_threads(1)
    cfg = {
        "seed": 0,
        "data": {
            "dataset": "synthetic-images",
            "n_train": 100 * parties,
            "n_test": 1000,
            "image_shape": [1, 28, 28],
            "num_classes": 10,
        },
        "partition": {"scheme": "dirichlet", "n_parties": parties, "beta": 0.5, "min_size": 10},
        "model": {"name": "simple-cnn"},
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.05},
        "strategy": {"name": "fedper"},
        "federation": {"rounds": 1},
        "eval": {"local_test": "split", "train_sample": 0, "model_heterogeneity": False},
        "engine": {"threads": 1},
        "output": {"plots": False},
    }
    with tempfile.TemporaryDirectory() as tmp:
        res = fedsim.run(cfg, out=Path(tmp) / "run")
        exp = experiment_for(RunSettings(res.config, str(res.run_dir)))
        ev = PartyEvaluator(exp, device, ClientStateStore(res.run_dir / "client_state"))
        state = torch.load(res.run_dir / "model.pt", weights_only=True)
        idx = torch.cat([ev._test_indices(p) for p in ev.parties])
        b = exp.bundle
        x, y = b.x_train[idx], b.y_train[idx]
        ev.model.load_state_dict(state)

        def reference() -> None:
            evaluate(ev.model, x, y, b.mean, b.std, b.num_classes, res.config.eval.batch_size, device)

        def local() -> None:
            ev._pooled(state, ev.parties, "local")

        def personal() -> None:
            ev._own_models(
                ev.parties,
                lambda p: ev.algo.personalize(ev.cfg.strategy, state, ev.client_state.load(p), None),
                "personal",
            )

        times: dict[str, list[float]] = {"one model": [], "local": [], "personal": []}
        for _ in range(repeats + 1):  # the first pass warms up and is dropped
            for name, fn in (("one model", reference), ("local", local), ("personal", personal)):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - t0)
        print(setup_line())
        print(
            f"{parties} parties, {idx.numel()} local test samples (simple-cnn, 1x28x28), on {device}, "
            f"medians of {repeats}"
        )
        ref = statistics.median(times["one model"][1:])
        print(f"{'mode':<12}{'ms':>10}{'ratio':>8}  goal <= {GOAL}")
        for name, ts in times.items():
            med = statistics.median(ts[1:])
            print(f"{name:<12}{1000 * med:>10.1f}{med / ref:>8.2f}")


if __name__ == "__main__":
    main()
