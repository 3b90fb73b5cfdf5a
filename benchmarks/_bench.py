"""Helpers shared by the benchmark scripts (not a benchmark itself).

* :func:`setup_line` names the software and the machine a table was measured on;
* :func:`base_config` is a fedsim config dict for benchmarks: no central
  evaluation, no checkpoints, no plots, no training-sample evaluation;
* :func:`load_parties` gives the very tensors and dataidxs a fedsim run trains on;
* :func:`plain_party_update` and :func:`weighted_average` are the plain PyTorch
  reference: one party's local epoch(s) and FedAvg's weighted mean, nothing else.

The scripts run as ``python benchmarks/NAME.py``, so this directory is on
``sys.path`` and ``import _bench`` finds this file.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import resource
import statistics
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


def setup_line() -> str:
    import flwr

    parts = [
        f"python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"flwr {flwr.__version__}",
    ]
    try:
        import ray

        parts.append(f"ray {ray.__version__}")
    except ImportError:  # pragma: no cover - ray is a dependency of flwr[simulation]
        parts.append("ray missing")
    parts.append(f"{platform.machine()}, {os.cpu_count()} CPUs")
    parts.append(f"torch threads {torch.get_num_threads()}")
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    return ", ".join(parts)


def deep_update(base: dict, extra: Mapping) -> dict:
    """``base`` with ``extra`` merged in, section by section (a new dict)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def base_config(**sections: Mapping) -> dict:
    """A fedsim config dict for timing: nothing but training and aggregation.

    ``federation.eval_every = 0`` (no central evaluation), ``eval.train_sample = 0``,
    ``output.checkpoint_every = 0``, ``output.plots = false``, one torch thread.
    """
    cfg: dict[str, Any] = {
        "seed": 0,
        "data": {"dataset": "synthetic-images", "n_test": 100},
        "partition": {"scheme": "iid"},
        "train": {"epochs": 1, "batch_size": 64},
        "federation": {"eval_every": 0},
        "engine": {"name": "local", "threads": 1},
        "eval": {"train_sample": 0},
        "output": {"checkpoint_every": 0, "plots": False},
    }
    return deep_update(cfg, sections)


class Parties:
    """The dataset tensors and per-party index tensors of a fedsim config."""

    def __init__(self, cfg_dict: Mapping) -> None:
        from fedsim.config.load import load_config
        from fedsim.inputs.run_inputs import compute_dataidxs, load_bundle

        self.cfg = load_config(dict(cfg_dict))
        bundle = load_bundle(self.cfg)
        self.bundle = bundle
        self.x, self.y = bundle.x_train, bundle.y_train
        self.mean, self.std = bundle.mean, bundle.std
        dataidxs = compute_dataidxs(self.cfg, bundle)
        self.indices = [torch.from_numpy(dataidxs[p].astype("int64")) for p in range(self.cfg.partition.n_parties)]

    def build_model(self) -> torch.nn.Module:
        from fedsim.models import build_model

        return build_model(self.cfg.model, self.bundle.input_shape, self.bundle.num_classes)

    def initial_state(self) -> OrderedDict[str, torch.Tensor]:
        """The global model before round 1, drawn as fedsim draws it (seed, "init")."""
        from fedsim.util.seeding import derive

        torch.manual_seed(derive(self.cfg.seed, "init"))
        model = self.build_model()
        return OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())


def load_parties(cfg_dict: Mapping) -> Parties:
    return Parties(cfg_dict)


def shuffle_generator(seed: int, server_round: int, party: int, device: str | torch.device = "cpu") -> torch.Generator:
    """The shuffling generator fedsim gives a party in a round, so the batches are the same."""
    from fedsim.util.seeding import torch_generator

    return torch_generator(seed, "train", server_round, party, device=device)


def plain_party_update(
    model: torch.nn.Module,
    global_state: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    idx: torch.Tensor,
    mean,
    std,
    *,
    lr: float,
    momentum: float,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    epochs: int = 1,
    generator: torch.Generator | None = None,
    amp_device: str | None = None,
) -> OrderedDict[str, torch.Tensor]:
    """One party's local training with a plain PyTorch loop; returns a copy of its state_dict.

    Load the global weights into the one model instance, build SGD, run ``epochs``
    passes over the party's shuffled mini-batches (uint8 rows normalised by
    :func:`fedsim.data.transforms.to_float`), return the weights.
    """
    from fedsim.data.transforms import to_float

    model.load_state_dict(global_state)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = int(idx.numel())
    for _ in range(epochs):
        gdev = generator.device if generator is not None else idx.device
        perm = torch.randperm(n, generator=generator, device=gdev).to(idx.device)
        for pos in torch.split(perm, batch_size):
            rows = idx[pos]
            xb = to_float(x[rows], mean, std)
            yb = y[rows]
            with torch.autocast(device_type=amp_device or "cpu", dtype=torch.bfloat16, enabled=amp_device is not None):
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())


def weighted_average(
    states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> OrderedDict[str, torch.Tensor]:
    """FedAvg: sum_k (n_k / n) w_k, accumulated in float64 in the given order; ints: max."""
    total = float(sum(weights))
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, first in states[0].items():
        if torch.is_floating_point(first):
            acc = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
            for w, st in zip(weights, states):
                acc.add_(st[key].to(torch.float64), alpha=float(w) / total)
            out[key] = acc.to(first.dtype)
        else:
            out[key] = torch.stack([st[key] for st in states]).amax(dim=0)
    return out


def max_abs_diff(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    worst = 0.0
    for key, t in a.items():
        if key not in b:
            return float("inf")
        u = b[key]
        if torch.is_floating_point(t):
            worst = max(
                worst, float((t.detach().cpu().double() - u.detach().cpu().double()).abs().max()) if t.numel() else 0.0
            )
    return worst


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        line = line.strip()
        if line:
            rows.append(json.loads(line))
    return rows


def alternating_pairs(
    a: Callable[[], float], b: Callable[[], float], repeats: int
) -> tuple[list[float], list[float], list[float]]:
    """``repeats`` pairs of runs, ``a()`` then ``b()`` (each returns its seconds), so that
    a shared machine's load falls on both alike: the seconds of each and each pair's
    ratio b / a."""
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(a())
        times_b.append(b())
    return times_a, times_b, [y / x for x, y in zip(times_a, times_b)]


def steady(values: Sequence[float], skip: int = 1) -> float:
    """Median of the rounds after the first ``skip`` (round 1 includes warm-up)."""
    vals = list(values[skip:]) or list(values)
    return statistics.median(vals) if vals else float("nan")


def peak_rss_mb() -> tuple[float, float]:
    """(this process, its waited-for children) peak resident set size in MB (Linux: ru_maxrss in KiB)."""
    scale = 1024.0 if sys.platform != "darwin" else 1.0  # macOS reports bytes
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return self_kb * scale / 2**20, child_kb * scale / 2**20


def fmt_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    line = "  ".join(str(h).rjust(w) if i else str(h).ljust(w) for i, (h, w) in enumerate(zip(header, widths)))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)
