"""q-FFL (Li et al. 2020) through Flower's QFedAvg: q = 0 is FedAvg, L = 1/train.lr by default."""

import pytest
import torch

import fedsim
import strategies


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


def test_lipschitz_defaults_to_one_over_the_learning_rate(tiny):
    cfg = fedsim.load_config(tiny(strategy={"name": "qffl", "q": 1.0}, train={"lr": 0.05}))
    params, lines = strategies.resolve(cfg)
    assert params.lipschitz == pytest.approx(20.0) and "1/train.lr" in lines[0]
    cfg = fedsim.load_config(tiny(strategy={"name": "qffl", "lipschitz": 3.0}))
    assert strategies.resolve(cfg) == (cfg.strategy, [])
