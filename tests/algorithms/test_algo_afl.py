"""AFL (Mohri et al. 2019): a fixed lambda is FedAvg (uniform on equal parties, by size on
any), the simplex projection and one round's step by hand, lambda resumes exactly; the
sweep's fairness table (the spread over the parties AFL and q-FFL are judged on) by hand."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

import fedsim
from fedsim.sweeps import Factor, Setting, fairness_table
from strategies.afl import AFLParams, AFLServer, project_simplex
from strategies.rounds import ClientOutcome, FederationSetup


def _weights(run_dir) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)


def _close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].double(), b[k].double(), atol=1e-6, rtol=0) for k in a)


@pytest.mark.parametrize(
    "scheme,init",
    [("iid", "uniform"), ("dirichlet", "size")],
    ids=["uniform-lambda-equal-parties", "size-lambda-any-parties"],
)
def test_a_fixed_lambda_is_fedavg(tmp_path, tiny, scheme, init):
    """gamma_lambda = 0: lambda stays where it starts; uniform 1/N is FedAvg's weighting when
    the parties hold equally many samples (iid 4 x 100), n_k/n is FedAvg's for any (Dir 0.5)."""
    base = {"partition": {"scheme": scheme, "n_parties": 4}}
    fedavg = fedsim.run(tiny(**base), out=tmp_path / "fedavg")
    afl = fedsim.run(tiny(**base, strategy={"name": "afl", "lr_lambda": 0.0, "init": init}), out=tmp_path / "afl")
    assert _close(_weights(fedavg.run_dir), _weights(afl.run_dir))
    assert afl.summary["test_accuracy"] == pytest.approx(fedavg.summary["test_accuracy"], abs=1e-6)


def test_uniform_lambda_is_not_fedavg_on_unequal_parties(tmp_path, tiny):
    """The reduction needs equal parties: on Dir(0.5) uniform lambda weighs parties alike,
    FedAvg by their sizes, and the models differ."""
    base = {"partition": {"scheme": "dirichlet", "n_parties": 4}, "federation": {"rounds": 1}}
    fedavg = fedsim.run(tiny(**base), out=tmp_path / "fedavg")
    afl = fedsim.run(tiny(**base, strategy={"name": "afl", "lr_lambda": 0.0}), out=tmp_path / "afl")
    assert not _close(_weights(fedavg.run_dir), _weights(afl.run_dir))


def test_the_simplex_projection_by_hand():
    assert np.allclose(project_simplex(np.array([0.5, 0.3, 0.4])), [0.5 - 0.2 / 3, 0.3 - 0.2 / 3, 0.4 - 0.2 / 3])
    assert np.allclose(project_simplex(np.array([2.0, 0.0, 0.0])), [1.0, 0.0, 0.0])
    assert np.allclose(project_simplex(np.array([0.6, 0.6, -1.0])), [0.5, 0.5, 0.0])


def test_one_afl_round_by_hand():
    """lambda = 1/4 each; parties 0 and 1 train to w = 0 and w = 1 with F = 1 and 3.
    w+ = (0.25 x 0 + 0.25 x 1) / 0.5 = 0.5; lambda + 0.1 F = (0.35, 0.55, 0.25, 0.25), sum 1.4,
    projected: minus 0.1 each = (0.25, 0.45, 0.15, 0.15). The next round weighs 0 and 1 as
    0.25 : 0.45."""
    server = AFLServer(AFLParams(name="afl", lr_lambda=0.1))
    server.bind(FederationSetup(seed=0, node_of_party={p: 100 + p for p in range(4)}))
    g = OrderedDict(w=torch.tensor([0.5]))

    def outcome(party, w, loss):
        return ClientOutcome(party, 100 + party, 10, {"global_loss": loss}, OrderedDict(w=torch.tensor([w])))

    agg = server.aggregate(1, g, [outcome(0, 0.0, 1.0), outcome(1, 1.0, 3.0)])
    assert agg.state["w"].item() == pytest.approx(0.5)
    assert np.allclose(server.lambdas, [0.25, 0.45, 0.15, 0.15]) and agg.metrics["afl_lambda_max"] == pytest.approx(
        0.45
    )
    agg = server.aggregate(2, g, [outcome(0, 0.0, 0.0), outcome(1, 1.0, 0.0)])
    assert agg.state["w"].item() == pytest.approx(0.45 / 0.7)


def test_lambda_is_checkpointed_and_resumes_exactly(tmp_path, tiny):
    cfg = tiny(strategy={"name": "afl", "lr_lambda": 0.5}, federation={"rounds": 3}, train={"epochs": 1})
    whole = fedsim.run(cfg, out=tmp_path / "whole")
    fedsim.run({**cfg, "federation": {"rounds": 1}}, out=tmp_path / "part")
    done = fedsim.run(cfg, out=tmp_path / "part", resume=True)
    a, b = _weights(whole.run_dir), _weights(done.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (whole.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["afl_lambda_max"] > 0.25  # lambda moved off uniform towards the worst party


def test_the_fairness_table_by_hand():
    """Two settings x two seeds of summary.csv rows: each cell the mean ± sample std over
    the seeds of the pooled accuracy, the std over parties, worst/best 10%, worst party, Jain."""
    factor = Factor("strategy", "strategy", (Setting("fedavg", {}), Setting("afl", {})))
    rows = []
    for label, (acc, std, worst10, best10, worst, jain) in (
        ("fedavg", ((0.90, 0.92), (0.10, 0.08), (0.60, 0.66), (1.0, 1.0), (0.40, 0.50), (0.98, 0.99))),
        ("afl", ((0.88, 0.88), (0.05, 0.05), (0.75, 0.77), (0.99, 0.99), (0.60, 0.64), (0.995, 0.997))),
    ):
        for seed in (0, 1):
            rows.append(
                {
                    "strategy": label,
                    "seed": seed,
                    "status": "finished",
                    "local_test_accuracy": acc[seed],
                    "local_test_accuracy_std": std[seed],
                    "local_test_accuracy_worst10": worst10[seed],
                    "local_test_accuracy_best10": best10[seed],
                    "local_test_accuracy_worst": worst[seed],
                    "local_test_accuracy_jain": jain[seed],
                }
            )
    text = fairness_table(rows, [factor], [0, 1])
    assert "| strategy | acc (%) | std over parties (pts) | worst 10% (%) | best 10% (%) | worst party (%) |" in text
    assert (
        "| fedavg | 91.00 ± 1.41 | 9.00 ± 1.41 | 63.00 ± 4.24 | 100.00 ± 0.00 | 45.00 ± 7.07 | 0.9850 ± 0.0071 | 2 |"
        in text
    )
    assert (
        "| afl | 88.00 ± 0.00 | 5.00 ± 0.00 | 76.00 ± 1.41 | 99.00 ± 0.00 | 62.00 ± 2.83 | 0.9960 ± 0.0014 | 2 |"
        in text
    )
    assert fairness_table([{**r, "local_test_accuracy_std": None} for r in rows], [factor]) == ""
