"""Per-layer parameters, FLOPs, output shapes and size of a model (``fedsim inspect``).

FLOPs convention: counted by ``torch.utils.flop_counter.FlopCounterMode`` on a forward
pass of ONE sample (a zero batch of size 1, eval mode, no grad): 2 FLOPs per
multiply-accumulate of convolutions and matrix multiplies (a conv costs
``2 * Cout * Hout * Wout * Cin/groups * kh * kw``, a Linear ``2 * in * out``);
elementwise ops, bias adds, normalisation, activations and pooling count 0. Recurrent
layers run as one fused kernel that the counter does not see; they are counted by
formula at the same convention: ``2 * gates * H * (I + H)`` per time step, layer and
direction (gates = 4 for an LSTM, 3 for a GRU, 1 for a plain RNN; I is the layer's input
size, H the hidden size). The counts are attributed to modules with forward hooks that read the counter before and
after each call, each module keeping only what its children did not; so the rows add
up exactly to FlopCounterMode's total.

Rows are the leaf modules (conv, linear, bn, relu, pool, ...) plus any container that
owns parameters/buffers itself or does counted work in its own ``forward`` (e.g. a
``torch.matmul`` written inline). ``params`` is a row's own parameters
(``recurse=False``); buffers (BatchNorm's running statistics) are not parameters.
``size_mb`` = (parameters + buffers) * 4 bytes / 2**20, i.e. the fp32 size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

FLOPS_CONVENTION = (
    "FLOPs: torch.utils.flop_counter.FlopCounterMode, forward pass of 1 sample; "
    "2 FLOPs per multiply-accumulate of convolutions and matrix multiplies (recurrent layers by formula); "
    "elementwise ops, normalisation, activations and pooling not counted"
)

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def rnn_flops(mod: nn.RNNBase, x: torch.Tensor) -> int:
    """FLOPs of one forward pass of a recurrent layer on ``x`` (see the module docstring)."""
    if x.dim() == 2:  # unbatched (L, I)
        steps, batch = x.shape[0], 1
    else:  # (B, L, I) with batch_first, else (L, B, I)
        batch, steps = (x.shape[0], x.shape[1]) if mod.batch_first else (x.shape[1], x.shape[0])
    gates = _GATES[mod.mode]
    dirs = 2 if mod.bidirectional else 1
    out_h = mod.proj_size or mod.hidden_size
    total = 0
    for layer in range(mod.num_layers):
        in_size = mod.input_size if layer == 0 else out_h * dirs
        per_step = 2 * gates * mod.hidden_size * (in_size + out_h)
        if mod.proj_size:
            per_step += 2 * mod.hidden_size * mod.proj_size
        total += per_step * steps * dirs
    return int(total * batch)


@dataclass
class LayerRow:
    name: str
    kind: str
    params: int
    flops: int
    output_shape: tuple  # shape of the output for a batch of 1 (batch dim included); () if not called


@dataclass
class ModelReport:
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    total_flops: int
    size_mb: float
    input_shape: tuple
    flops_convention: str = field(default=FLOPS_CONVENTION)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has any BatchNorm layer (1d, 2d, 3d, sync)."""
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def _shape_of(out: Any) -> tuple:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)):
        return tuple(_shape_of(o) for o in out if isinstance(o, (torch.Tensor, tuple, list)))
    return ()


def _dummy_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    ref = next(model.parameters(), None)
    if ref is None:
        ref = next(model.buffers(), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    # a sequence model reads int64 tokens: token 0 is a valid input
    dtype = getattr(model, "input_dtype", None) if getattr(model, "input_dtype", None) == torch.int64 else dtype
    # zeros, not random: inspecting must not advance the global RNG
    return torch.zeros((1, *input_shape), device=device, dtype=dtype)


def inspect_model(model: nn.Module, input_shape: tuple[int, ...]) -> ModelReport:
    """Parameters, FLOPs (one sample; see the module docstring) and output shape per layer."""
    input_shape = tuple(int(s) for s in input_shape)
    named = list(model.named_modules())  # deduplicated: a shared module is one row
    tracker = _FlopTracker([m for _, m in named])
    _hooked_forward(model, named, tracker, input_shape)
    total_flops = tracker.total()
    rows = _layer_rows(named, tracker)
    # work done outside any module's forward cannot happen here (the root is a module),
    # but keep the rows honest if a hook-less path ever appears
    rest = total_flops - sum(r.flops for r in rows)
    if rest:
        rows.append(LayerRow("(outside modules)", "-", 0, rest, ()))
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    n_buffers = sum(b.numel() for b in model.buffers())
    return ModelReport(
        rows=rows,
        total_params=n_params,
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_flops=total_flops,
        size_mb=(n_params + n_buffers) * 4 / 2**20,
        input_shape=input_shape,
        flops_convention=FLOPS_CONVENTION,
    )


class _FlopTracker:
    """Forward hooks that attribute the counter's FLOPs to modules: each module keeps what
    it did minus what its children did (so the rows add up to the counter's total), and
    its output shape."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.counter = FlopCounterMode(display=False)
        self.inclusive_start: dict[int, list[int]] = {}  # id(module) -> stack of counter totals at entry
        self.child_flops: dict[int, list[int]] = {}  # id(module) -> stack of its children's FLOPs in this call
        self.own_flops: dict[int, int] = {id(m): 0 for m in modules}
        self.out_shapes: dict[int, tuple] = {}
        self.stack: list[int] = []
        # FLOPs of recurrent layers counted by formula (the counter sees none of their work)
        self.by_formula = 0

    def total(self) -> int:
        """The FLOPs so far: the counter's and the recurrent layers' by formula."""
        return self.counter.get_total_flops() + self.by_formula

    def pre_hook(self, mod: nn.Module, args: Any) -> None:
        """A module's call begins: note the total, open its children's tally."""
        key = id(mod)
        self.inclusive_start.setdefault(key, []).append(self.total())
        self.child_flops.setdefault(key, []).append(0)
        self.stack.append(key)

    def post_hook(self, mod: nn.Module, args: Any, out: Any) -> None:
        """A module's call ends: keep what its children did not do, pass the whole to its parent."""
        key = id(mod)
        self.stack.pop()
        if isinstance(mod, nn.RNNBase) and self.total() == self.inclusive_start[key][-1] and args:
            self.by_formula += rnn_flops(mod, args[0])
        inclusive = self.total() - self.inclusive_start[key].pop()
        self.own_flops[key] += inclusive - self.child_flops[key].pop()
        if self.stack:
            self.child_flops[self.stack[-1]][-1] += inclusive
        self.out_shapes[key] = _shape_of(out)


def _hooked_forward(
    model: nn.Module, named: list[tuple[str, nn.Module]], tracker: _FlopTracker, input_shape: tuple[int, ...]
) -> None:
    """One forward pass of a zero sample in eval mode under the counter, every module
    hooked; the hooks and each module's train/eval mode are restored after."""
    handles = []
    modes = {id(m): m.training for _, m in named}
    try:
        for _, m in named:
            handles.append(m.register_forward_pre_hook(tracker.pre_hook))
            handles.append(m.register_forward_hook(tracker.post_hook))
        model.eval()
        x = _dummy_input(model, input_shape)
        with torch.no_grad(), tracker.counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
        for _, m in named:
            m.train(modes[id(m)])


def _layer_rows(named: list[tuple[str, nn.Module]], tracker: _FlopTracker) -> list[LayerRow]:
    """A row per leaf module, and per container that owns weights or does counted work itself."""
    rows: list[LayerRow] = []
    for name, m in named:
        is_leaf = next(m.children(), None) is None
        own_params = sum(p.numel() for p in m.parameters(recurse=False))
        owns_state = own_params > 0 or next(m.buffers(recurse=False), None) is not None
        if not (is_leaf or owns_state or tracker.own_flops[id(m)] > 0):
            continue
        rows.append(
            LayerRow(
                name=name or "(root)",
                kind=type(m).__name__,
                params=own_params,
                flops=tracker.own_flops[id(m)],
                output_shape=tracker.out_shapes.get(id(m), ()),
            )
        )
    return rows


def human(n: float, suffix: str = "") -> str:
    """12345678 -> '12.35M'; below 1000 the number itself."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}{suffix}"
    return f"{int(n)}{suffix}" if float(n).is_integer() else f"{n:.2f}{suffix}"


def _human_flops(n: int) -> str:
    """1110845440 -> '1.11 GFLOPs'; 1303440 -> '1.30 MFLOPs'."""
    text = human(n)
    return f"{text[:-1]} {text[-1]}FLOPs" if text[-1].isalpha() else f"{text} FLOPs"


def _fmt_shape(shape: tuple) -> str:
    if not shape:
        return "-"
    if all(isinstance(s, int) for s in shape):
        return "[" + ", ".join(str(s) for s in shape) + "]"
    return ", ".join(_fmt_shape(s) for s in shape)


def format_report(report: ModelReport) -> str:
    """A plain-text table (layer, type, output shape, params, FLOPs), then the totals."""
    header = ("layer", "type", "output shape", "params", "FLOPs")
    body = [
        (
            r.name,
            r.kind,
            _fmt_shape(r.output_shape),
            human(r.params) if r.params else "0",
            human(r.flops) if r.flops else "0",
        )
        for r in report.rows
    ]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    align_right = (False, False, False, True, True)

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, align_right)
        ).rstrip()

    rule = "-" * len(line(tuple("-" * w for w in widths)))
    out = [f"input shape: {_fmt_shape((1, *report.input_shape))} (batch of 1)", line(header), rule]
    out += [line(row) for row in body]
    out.append(rule)
    out += [
        f"total params:     {report.total_params:,} ({human(report.total_params)})",
        f"trainable params: {report.trainable_params:,} ({human(report.trainable_params)})",
        f"total FLOPs:      {report.total_flops:,} ({_human_flops(report.total_flops)})",
        f"size (fp32):      {report.size_mb:.2f} MB (parameters + buffers)",
        report.flops_convention,
    ]
    return "\n".join(out)
