"""What a compressor costs a round: encode on the client plus decode on the server.

One process, one torch thread, on the CPU. For each model (NIID-Bench's simple CNN and
ResNet-18, 3x32x32 inputs, 10 classes) one party trains one local epoch (SGD lr 0.01,
batch 64, 500 synthetic images; ``--images`` sets the count) from the initial weights;
then every codec of ``comm.compressor`` encodes that update d_k = w_k - w
(``fedsim.comm.update.UpdateCodec.encode``: the payload and, with error feedback, the
residual) and the server decodes it (``UpdateCodec.decode``). A round of K parties is K
trainings, K encodes and K decodes, so the ratio per party is the ratio per round.
Goal: encode + decode <= 5% of the local training. A party with more data trains longer
for the same codec cost, so the ratio at 500 images bounds that of larger parties.
Medians of ``--repeats``; ``python benchmarks/compression_overhead.py [--quick]
[--repeats 3] [--images N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import _bench
import torch
import torch.nn.functional as F
from flwr.app import RecordDict

from fedsim.comm import codecs
from fedsim.comm.update import UpdateCodec
from fedsim.models import build_model
from fedsim.schema.sections import CommConfig, ModelConfig

MODELS = {"simple-cnn": 500, "resnet18": 500}


def train_epoch(model: torch.nn.Module, n: int, gen: torch.Generator) -> float:
    """Seconds of one local epoch over ``n`` synthetic images, batch 64."""
    x = torch.randn(n, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    t0 = time.perf_counter()
    for i in range(0, n, 64):
        opt.zero_grad()
        F.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
        opt.step()
    return time.perf_counter() - t0


def codec_seconds(name: str, model: torch.nn.Module, w: dict, wk: dict, repeats: int) -> tuple[float, float]:
    """(encode, decode) seconds of codec ``name`` on the update wk - w, medians."""
    cls = codecs.get(name).Params
    params = cls(compressor=name) if cls is not CommConfig else CommConfig(compressor=name)
    codec = UpdateCodec(codecs.get(name), params, [k for k, _ in model.named_parameters()])
    enc_t, dec_t = [], []
    for r in range(repeats):
        gen = torch.Generator().manual_seed(r)
        t0 = time.perf_counter()
        enc = codec.encode(wk, w, None, gen)
        t1 = time.perf_counter()
        codec.decode(RecordDict({"arrays": enc.arrays, "comm": enc.keys}), w)
        t2 = time.perf_counter()
        enc_t.append(t1 - t0)
        dec_t.append(t2 - t1)
    return statistics.median(enc_t), statistics.median(dec_t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="the simple CNN only, one repeat")
    ap.add_argument("--images", type=int, default=0, help="the party's images (0: 500)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats = 1 if args.quick else args.repeats
    print(_bench.setup_line())
    for arch, n in list(MODELS.items())[: 1 if args.quick else None]:
        n = args.images or n
        torch.manual_seed(0)
        model = build_model(ModelConfig(name=arch), (3, 32, 32), 10)
        w = {k: v.detach().clone() for k, v in model.state_dict().items()}
        gen = torch.Generator().manual_seed(0)
        train_epoch(model, min(n, 64), gen)  # warm-up (the first step's imports)
        model.load_state_dict(w)
        t_round = statistics.median(train_epoch(model, n, gen) for _ in range(repeats))
        wk = {k: v.detach().clone() for k, v in model.state_dict().items()}
        params = sum(p.numel() for p in model.parameters())
        rows = []
        for name in codecs.available():
            if not codecs.get(name).lossy:
                continue
            enc, dec = codec_seconds(name, model, w, wk, repeats)
            rows.append([name, f"{1000 * enc:.1f}", f"{1000 * dec:.1f}", f"{100 * (enc + dec) / t_round:.2f}%"])
        print(f"\n{arch}: {params:,} parameters; one local epoch of {n} images: {t_round:.2f} s")
        print(_bench.fmt_table(["codec", "encode ms", "decode ms", "(enc+dec)/round"], rows))


if __name__ == "__main__":
    main()
