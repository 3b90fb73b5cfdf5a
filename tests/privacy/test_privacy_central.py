"""Client-level DP-FedAvg (fedsim/privacy/central.py) against its formulas.

Per round: clip each update Delta_k to norm C, noise the mean with
z ~ N(0, (sigma C / (qN))^2 I), and let the algorithm aggregate a cohort whose models
average to w + sum_k clip(Delta_k) / (qN) + z; adaptive clipping moves C by
exp(-eta (unclipped share - gamma)) (Andrew et al. 2021).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch

pytest.importorskip("dp_accounting", reason="pip install 'fedsim[privacy]'")

from fedsim.config.load import load_config  # noqa: E402
from fedsim.privacy.central import ClientLevelDP, update_norm  # noqa: E402
from fedsim.util import flower_compat  # noqa: E402
from strategies.strategy import Aggregate, ClientOutcome, FedAvgServer, FederationSetup  # noqa: E402

P = 20_000  # coordinates: the noise's std is measured over them


@pytest.fixture(autouse=True)
def _task_identity():
    # the privatised cohort is Flower messages, which read the run's identity (a Grid sets it)
    flower_compat.set_task_identity(1)


def _cfg(tiny, n_parties=4, **privacy):
    return load_config(tiny(partition={"n_parties": n_parties}, privacy={"mode": "central-fixed", **privacy}))


def _server(n_parties=4) -> FedAvgServer:
    s = FedAvgServer()
    s.bind(FederationSetup(seed=0, node_of_party={k: 100 + k for k in range(n_parties)}))
    return s


class Spy(FedAvgServer):
    """FedAvg that keeps the cohort it was handed."""

    def aggregate(self, server_round, global_state, outcomes):
        self.seen = outcomes
        return super().aggregate(server_round, global_state, outcomes)


def _outcomes(global_state, norms, seed=0, num_examples=None):
    """Replies whose updates have the given norms (random directions)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k, norm in enumerate(norms):
        d = torch.randn(P, generator=g)
        d = d / d.norm() * norm
        state = OrderedDict(w=global_state["w"] + d)
        n = num_examples[k] if num_examples else 10 * (k + 1)
        out.append(ClientOutcome(party=k, node_id=100 + k, num_examples=n, metrics={}, state=state))
    return out


def test_noise_std_is_sigma_c_over_m(tiny):
    sigma, C, m = 1.3, 0.5, 4
    dp = ClientLevelDP(_cfg(tiny, noise_multiplier=sigma, clipping_norm=C))
    glob = OrderedDict(w=torch.zeros(P))
    draws = []
    for rnd in range(1, 6):  # 5 rounds x 20,000 coordinates
        outs = _outcomes(glob, [0.0] * m)  # no update: the aggregate is w + z
        agg = dp.aggregate(_server(), rnd, glob, outs)
        draws.append(agg.state["w"].double())
    z = torch.cat(draws)
    expected = sigma * C / m
    assert float(z.std()) == pytest.approx(expected, rel=0.01)  # 100,000 draws: std error 0.2%
    assert abs(float(z.mean())) < 4 * expected / math.sqrt(z.numel())
    assert agg.metrics["dp_noise_std"] == pytest.approx(expected)
    # the noise of a round comes from (seed, round): drawn again, the same bits
    again = dp.aggregate(_server(), 5, glob, _outcomes(glob, [0.0] * m))
    assert torch.equal(again.state["w"], agg.state["w"])


def test_clipped_updates_never_exceed_the_norm(tiny):
    C = 1.0
    dp = ClientLevelDP(_cfg(tiny, noise_multiplier=0.0, clipping_norm=C))
    glob = OrderedDict(w=torch.randn(P))
    norms = [0.25, 0.999, 1.5, 40.0]
    outs = _outcomes(glob, norms)
    spy = Spy()
    spy.bind(FederationSetup(seed=0, node_of_party={k: 100 + k for k in range(4)}))
    agg = dp.aggregate(spy, 1, glob, outs)
    for o, sent, norm in zip(spy.seen, outs, norms):
        assert update_norm(o.state, glob) <= C * (1 + 1e-5)
        assert o.num_examples == 1  # every party weighs the same
        if norm <= C:  # an update within the norm is passed on as it is
            assert torch.equal(o.state["w"], sent.state["w"])
        else:  # scaled to norm C, same direction
            d = o.state["w"].double() - glob["w"].double()
            assert float(d.norm()) == pytest.approx(C, rel=1e-5)
            cos = torch.nn.functional.cosine_similarity(d, sent.state["w"].double() - glob["w"].double(), dim=0)
            assert float(cos) == pytest.approx(1.0, abs=1e-6)
    assert agg.metrics["dp_clipped_share"] == 0.5


def test_noise_zero_and_a_huge_norm_is_the_wrapped_fedavg_exactly(tiny):
    dp = ClientLevelDP(_cfg(tiny, noise_multiplier=0.0, clipping_norm=1e9))
    glob = OrderedDict(w=torch.randn(P))
    outs = _outcomes(glob, [0.3, 2.0, 7.0, 0.01], num_examples=[25, 25, 25, 25])
    ours = dp.aggregate(_server(), 1, glob, outs).state
    plain = _server().aggregate(1, glob, outs).state
    assert torch.equal(ours["w"], plain["w"])


def test_fixed_denominator_and_poisson_cohort(tiny):
    """With q < 1 the mean divides by the expected cohort qN, and parties join with probability q."""
    cfg = load_config(
        tiny(
            partition={"n_parties": 40},
            federation={"fraction_fit": 0.25},
            privacy={"mode": "central-fixed", "noise_multiplier": 0.0, "clipping_norm": 10.0},
        )
    )
    dp = ClientLevelDP(cfg)
    glob = OrderedDict(w=torch.zeros(P))
    outs = _outcomes(glob, [1.0, 2.0, 3.0])
    agg = dp.aggregate(_server(40), 1, glob, outs).state
    by_hand = sum(o.state["w"].double() for o in outs) / (0.25 * 40)
    assert torch.allclose(agg["w"].double(), by_hand, atol=1e-6)
    sizes = [len(dp.sample(r, list(range(40)))) for r in range(1, 401)]
    assert np.mean(sizes) == pytest.approx(10.0, abs=0.35)  # Binomial(40, 0.25): mean 10, se 0.14
    assert dp.sample(7, list(range(40))) == dp.sample(7, list(range(40)))
    # an empty cohort still releases the noise (here none): the model stays
    empty = dp.aggregate(_server(40), 2, glob, []).state
    assert torch.equal(empty["w"], glob["w"])


def test_adaptive_norm_follows_andrew_et_al(tiny):
    """C <- C exp(-eta (b - gamma)), b the unclipped share; sigma = 0: no count noise."""
    cfg = load_config(
        tiny(
            privacy={
                "mode": "central-adaptive",
                "noise_multiplier": 0.0,
                "clipping_norm": 0.1,
                "clip_lr": 0.2,
                "target_quantile": 0.5,
            }
        )
    )
    dp = ClientLevelDP(cfg)
    glob = OrderedDict(w=torch.zeros(P))
    dp.aggregate(_server(), 1, glob, _outcomes(glob, [5.0, 6.0, 7.0, 8.0]))  # all clipped: b = 0
    assert dp.clipping_norm == pytest.approx(0.1 * math.exp(0.2 * 0.5))
    dp.clipping_norm = 100.0
    dp.aggregate(_server(), 2, glob, _outcomes(glob, [5.0, 6.0, 7.0, 8.0]))  # none clipped: b = 1
    assert dp.clipping_norm == pytest.approx(100.0 * math.exp(-0.2 * 0.5))
    # it converges to the median of the update norms
    dp.clipping_norm = 0.1
    norms = [1.0, 2.0, 3.0, 4.0]
    for rnd in range(3, 300):
        dp.aggregate(_server(), rnd, glob, _outcomes(glob, norms))
    assert 2.0 * 0.9 < dp.clipping_norm < 3.0 * 1.1


def test_sigma_is_split_between_count_and_update(tiny):
    """Andrew et al.: sigma_D = (sigma^-2 - (2 sigma_b)^-2)^-1/2 with sigma_b = qN/20."""
    cfg = load_config(tiny(partition={"n_parties": 100}, privacy={"mode": "central-adaptive", "noise_multiplier": 1.0}))
    dp = ClientLevelDP(cfg)
    assert dp.count_std == pytest.approx(100 / 20)
    assert dp.update_sigma == pytest.approx((1.0 - (2 * 5.0) ** -2) ** -0.5)


def test_an_aggregate_keeps_the_wrapped_servers_metrics(tiny):
    dp = ClientLevelDP(_cfg(tiny, noise_multiplier=0.0, clipping_norm=1.0))

    class WithMetric(FedAvgServer):
        def aggregate(self, server_round, global_state, outcomes):
            return Aggregate(self.average(outcomes), {"tau_eff": 3.0})

    s = WithMetric()
    s.bind(FederationSetup(seed=0, node_of_party={k: 100 + k for k in range(4)}))
    glob = OrderedDict(w=torch.zeros(P))
    agg = dp.aggregate(s, 1, glob, _outcomes(glob, [1.0] * 4))
    assert agg.metrics["tau_eff"] == 3.0 and agg.metrics["dp_clipping_norm"] == 1.0
