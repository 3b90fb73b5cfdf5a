"""AFL (Mohri et al. 2019): a fixed lambda is FedAvg (uniform on equal parties, by size on
any), the simplex projection and one round's step by hand, lambda resumes exactly."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

import fedsim
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
