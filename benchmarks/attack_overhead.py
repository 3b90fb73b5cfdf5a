"""What the attack and defence rules cost the server in a round.

    python benchmarks/attack_overhead.py [--quick] [--repeats K] [--clients N]

The server's part of one FedAvg round (``FedsimStrategy.aggregate_train``: decoding the
N replies, screening, the reply rules, the weighted mean), timed with no rule (the
reference) and with each rule of ``attacks/`` and ``strategies/`` that the MNIST
results use (2 of the N parties malicious): sign-flip, ALIE, norm bounding, ALIE then
norm bounding, centred clipping. The replies are the model's initial weights plus
Gaussian noise (0.01), built as Flower ``Message`` objects as the engine delivers them.
Models: NIID-Bench's simple CNN for MNIST (44k weights) and the CIFAR-form resnet18
(11.2M; skipped with ``--quick``). Each line is the median of ``--repeats`` rounds with
the rule and without it, alternating in the same process, and the median of the paired
ratios. Client training, which
the rules do not touch, is not included: a round of local training is seconds (MNIST,
800 images a party) to minutes (resnet18), so the ratios here bound the rules' share
from above.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import OrderedDict

import _bench
import torch
from flwr.app import Message, MetricRecord, RecordDict

import attacks
import strategies
from fedsim.models import build_model
from fedsim.schema.sections import ModelConfig
from fedsim.util import flower_compat as fc
from strategies import defences
from strategies.arrays import state_to_record
from strategies.strategy import FederationSetup, RoundLog


def replies(global_state: OrderedDict, n: int) -> list[Message]:
    gen = torch.Generator().manual_seed(0)
    out = []
    fc.set_task_identity(1)
    for party in range(n):
        state = OrderedDict(
            (k, v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone())
            for k, v in global_state.items()
        )
        ask = Message(RecordDict(), dst_node_id=100 + party, message_type="train")
        fc.set_message_id(ask, f"m{party}")
        content = RecordDict({"arrays": state_to_record(state), "metrics": MetricRecord({"num-examples": 800})})
        out.append(Message(content, reply_to=ask))
    return out


def rules_of(name: str, n: int) -> tuple:
    mal = [0, 1]
    made = {
        "none": [],
        "sign-flip": [attacks.build_rule(attacks.get("sign-flip").Params(name="sign-flip", parties=mal), n, 0)],
        "alie": [attacks.build_rule(attacks.get("alie").Params(name="alie", parties=mal), n, 0)],
        "norm-bound": [defences.build_rule(defences.get("norm-bound").Params(name="norm-bound"))],
        "alie + norm-bound": [
            attacks.build_rule(attacks.get("alie").Params(name="alie", parties=mal), n, 0),
            defences.build_rule(defences.get("norm-bound").Params(name="norm-bound")),
        ],
        "centred-clip": [defences.build_rule(defences.get("centred-clip").Params(name="centred-clip"))],
    }
    return tuple(made[name])


def strategy_with(global_state: OrderedDict, n: int, rule_name: str):
    strat = strategies.build(strategies.make_params({"name": "fedavg"}), rules_of(rule_name, n))
    keys = frozenset(k for k, v in global_state.items() if v.is_floating_point())
    strat.bind(FederationSetup(seed=0, node_of_party={i: 100 + i for i in range(n)}, param_keys=keys))
    return strat


def one_round(strat, global_state: OrderedDict, msgs: list[Message], rnd: int) -> float:
    strat.round_log = RoundLog(round=rnd, global_state=OrderedDict(global_state), sampled=list(range(len(msgs))))
    t0 = time.perf_counter()
    strat.aggregate_train(rnd, msgs)
    return time.perf_counter() - t0


def paired(global_state: OrderedDict, n: int, rule_name: str, repeats: int) -> tuple[float, float, float]:
    """(median seconds without a rule, with it, median of the paired ratios): the two
    rounds alternate, so that a load that changes during the measurement hits both."""
    plain, ruled = strategy_with(global_state, n, "none"), strategy_with(global_state, n, rule_name)
    # fresh replies for each: a rule rewrites the replies it changes
    msgs_plain, msgs_ruled = replies(global_state, n), replies(global_state, n)
    one_round(plain, global_state, msgs_plain, 1)  # warm-up
    one_round(ruled, global_state, msgs_ruled, 1)
    a, b = [], []
    for rnd in range(2, repeats + 2):
        a.append(one_round(plain, global_state, msgs_plain, rnd))
        b.append(one_round(ruled, global_state, msgs_ruled, rnd))
    return statistics.median(a), statistics.median(b), statistics.median(y / x for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="simple-cnn only, 3 repeats")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--clients", type=int, default=10)
    args = ap.parse_args()
    repeats = 3 if args.quick else args.repeats
    print(_bench.setup_line())
    models = [("simple-cnn", (1, 28, 28))] + ([] if args.quick else [("resnet18", (3, 32, 32))])
    names = ("none", "sign-flip", "alie", "norm-bound", "alie + norm-bound", "centred-clip")
    for model_name, shape in models:
        torch.manual_seed(0)
        model = build_model(ModelConfig(name=model_name), shape, 10)
        g = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
        n_weights = sum(v.numel() for v in g.values() if v.is_floating_point())
        print(f"\n{model_name}: {n_weights:,} weights, {args.clients} replies, median of {repeats} rounds")
        for name in names[1:]:
            t0, t1, ratio = paired(g, args.clients, name, repeats)
            print(f"  {name:<18} {t1 * 1000:9.1f} ms against {t0 * 1000:9.1f} ms without a rule: {ratio:5.2f}x")


if __name__ == "__main__":
    main()
