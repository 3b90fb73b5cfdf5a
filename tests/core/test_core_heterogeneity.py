"""Model heterogeneity measures against hand computations on fixed updates."""

import math

import pytest
import torch

from fedsim.measures.heterogeneity import model_heterogeneity


def test_two_identical_updates():
    g = torch.zeros(3)
    d = torch.tensor([1.0, 2.0, 2.0])
    clients = torch.stack([g + d, g + d])
    agg = g + d
    m = model_heterogeneity(g, clients, agg)
    assert m["update_cosine_mean"] == pytest.approx(1.0)
    assert m["gradient_diversity"] == pytest.approx(0.5)  # 2||d||^2 / ||2d||^2
    assert m["update_norm_mean"] == pytest.approx(3.0)
    assert m["client_drift_mean"] == pytest.approx(0.0)


def test_orthogonal_and_opposite_updates():
    g = torch.tensor([1.0, 1.0])
    clients = torch.stack([g + torch.tensor([1.0, 0.0]), g + torch.tensor([0.0, 1.0])])
    agg = clients.mean(0)
    m = model_heterogeneity(g, clients, agg)
    assert m["update_cosine_mean"] == pytest.approx(0.0)
    assert m["gradient_diversity"] == pytest.approx(1.0)  # (1 + 1) / ||(1, 1)||^2
    # ||w_k - w+|| / ||w+||: w+ = (1.5, 1.5), w_1 - w+ = (0.5, -0.5)
    assert m["client_drift_mean"] == pytest.approx(math.sqrt(0.5) / math.sqrt(4.5))
    opp = torch.stack([g + torch.tensor([1.0, 0.0]), g - torch.tensor([1.0, 0.0])])
    m2 = model_heterogeneity(g, opp, g)
    assert m2["update_cosine_mean"] == pytest.approx(-1.0)
    assert m2["gradient_diversity"] is None  # sum of updates is 0: undefined


def test_three_clients_pairwise_mean():
    g = torch.zeros(2)
    ds = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.0, 2.0])]
    clients = torch.stack(ds)
    m = model_heterogeneity(g, clients, clients.mean(0))

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    expected = (cos(ds[0], ds[1]) + cos(ds[0], ds[2]) + cos(ds[1], ds[2])) / 3
    assert m["update_cosine_mean"] == pytest.approx(expected)
    s = sum(float(d @ d) for d in ds)
    assert m["gradient_diversity"] == pytest.approx(s / float(sum(ds) @ sum(ds)))
    assert m["update_norm_max"] == pytest.approx(2.0)


def test_linear_time_formulas_match_the_pairwise_definitions():
    """The O(KP) identities against the definitions computed pair by pair."""
    torch.manual_seed(0)
    K, P = 7, 500
    g = torch.randn(P)
    clients = g + 0.1 * torch.randn(K, P)
    clients[3] = g  # a client that did not move: its pairs count 0
    agg = clients.mean(0)
    m = model_heterogeneity(g, clients, agg)
    D = (clients - g).double()
    n = D.norm(dim=1)
    pairs = [
        0.0 if n[i] == 0 or n[j] == 0 else float(D[i] @ D[j] / (n[i] * n[j])) for i in range(K) for j in range(i + 1, K)
    ]
    assert m["update_cosine_mean"] == pytest.approx(sum(pairs) / len(pairs), abs=1e-6)
    assert m["gradient_diversity"] == pytest.approx(float((n**2).sum() / (D.sum(0) @ D.sum(0))), rel=1e-5)
    div = (clients.double() - agg.double()).norm(dim=1) / agg.double().norm()
    assert m["client_drift_mean"] == pytest.approx(float(div.mean()), rel=1e-5)
    assert m["client_drift_max"] == pytest.approx(float(div.max()), rel=1e-5)


def test_gram_and_two_pass_paths_agree(monkeypatch):
    import fedsim.measures.heterogeneity as H

    torch.manual_seed(1)
    g = {"a": torch.randn(30), "b": torch.randn(4, 5)}
    clients = [{k: v + 0.2 * torch.randn_like(v) for k, v in g.items()} for _ in range(6)]
    agg = {k: torch.stack([c[k] for c in clients]).mean(0) for k in g}
    one_pass = H.heterogeneity_of_states(g, clients, agg, ["a", "b"])
    monkeypatch.setattr(H, "GRAM_MAX_CLIENTS", 0)
    two_pass = H.heterogeneity_of_states(g, clients, agg, ["a", "b"])
    assert one_pass.keys() == two_pass.keys()
    for k in one_pass:
        assert one_pass[k] == pytest.approx(two_pass[k], rel=1e-5)
