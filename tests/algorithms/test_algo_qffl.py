"""q-FFL (Li et al. 2020) through Flower's QFedAvg: q = 0 is FedAvg, L = 1/train.lr by default,
one step by hand."""

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

import fedsim
import strategies
from fedsim.util import flower_compat as fc
from strategies.qffl import QFFLParams
from strategies.rounds import FederationSetup, RoundLog


def _weights(run_dir) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)


def test_q_zero_equals_fedavg_on_equal_parties(tmp_path, tiny):
    """q = 0: every h_k is L = 1/train.lr and the step lands on the cohort's plain mean,
    which is FedAvg's when the parties hold equally many examples (iid, 4 x 100)."""
    base = {"partition": {"scheme": "iid", "n_parties": 4}}
    fedavg = fedsim.run(tiny(**base), out=tmp_path / "fedavg")
    qffl = fedsim.run(tiny(**base, strategy={"name": "qffl", "q": 0.0}), out=tmp_path / "qffl")
    a, b = _weights(fedavg.run_dir), _weights(qffl.run_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=1e-6, rtol=0), k
    assert qffl.summary["test_accuracy"] == pytest.approx(fedavg.summary["test_accuracy"], abs=1e-6)
    # q-FFL's parties report F_k(w^t) (the received model's loss, before training); FedAvg's are not asked
    rows = [json.loads(line) for line in (qffl.run_dir / "clients.jsonl").read_text().splitlines()]
    plain = [json.loads(line) for line in (fedavg.run_dir / "clients.jsonl").read_text().splitlines()]
    assert all(r["global_loss"] > 0 and r["global_loss_rms"] >= r["global_loss"] for r in rows if r["stage"] == "train")
    assert not any("global_loss" in r for r in plain)


def test_lipschitz_defaults_to_one_over_the_learning_rate(tiny):
    cfg = fedsim.load_config(tiny(strategy={"name": "qffl", "q": 1.0}, train={"lr": 0.05}))
    params, lines = strategies.resolve(cfg)
    assert params.lipschitz == pytest.approx(20.0) and "1/train.lr" in lines[0]
    cfg = fedsim.load_config(tiny(strategy={"name": "qffl", "lipschitz": 3.0}))
    assert strategies.resolve(cfg) == (cfg.strategy, [])


def test_one_q_fedavg_step_by_hand():
    """q = 1, L = 2, global w = (1, 2); party 0: w_0 = (0, 2), F_0 = 0.5; party 1:
    w_1 = (1, 0), F_1 = 2. dw_0 = (2, 0), delta_0 = (1, 0), h_0 = 1 * 4 + 2 * 0.5 = 5;
    dw_1 = (0, 4), delta_1 = (0, 8), h_1 = 16 + 2 * 2 = 20; w+ = (1, 2) - (1, 8) / 25.
    The buffer b is FedAvg's example-weighted mean: (10 * 0 + 30 * 4) / 40 = 3. F_k is the
    reply's ``global_loss`` (the received model's loss before training), not ``train_loss``."""
    server = strategies.get("qffl").server(QFFLParams(name="qffl", q=1.0, lipschitz=2.0))
    server.bind(FederationSetup(seed=0, node_of_party={0: 100, 1: 101}, param_keys=frozenset({"w"})))
    global_state = OrderedDict(w=torch.tensor([1.0, 2.0]), b=torch.tensor([0.0]))
    fc.set_remembered_global(server, ArrayRecord({"w": Array(np.asarray([1.0, 2.0], dtype=np.float32))}))
    server.round_log = RoundLog(round=1, global_state=global_state, sampled=[0, 1])
    fc.set_task_identity(1)
    replies = []
    for party, (w, b, loss, n) in enumerate([([0.0, 2.0], [0.0], 0.5, 10), ([1.0, 0.0], [4.0], 2.0, 30)]):
        sent = Message(RecordDict(), dst_node_id=100 + party, message_type="train")
        fc.set_message_id(sent, f"m{party}")
        arrays = {"w": Array(np.asarray(w, dtype=np.float32)), "b": Array(np.asarray(b, dtype=np.float32))}
        metrics = MetricRecord({"global_loss": loss, "train_loss": 9.0, "num-examples": n})
        replies.append(Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics}), reply_to=sent))
    server.aggregate_train(1, replies)
    state = server.round_log.agg_state
    assert torch.allclose(state["w"].double(), torch.tensor([1 - 1 / 25, 2 - 8 / 25], dtype=torch.float64), atol=1e-6)
    assert state["b"].item() == pytest.approx(3.0)
