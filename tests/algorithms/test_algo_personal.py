"""Personalised FL (issue 16): the algorithms' theory, with numbers.

FedPer and LG-FedAvg without personal layers are FedAvg; APFL with alpha fixed at 0
is FedAvg; ``local`` never changes the global model; FedRep with zero head epochs
trains only the body; Ditto's personal model approaches the global one as lamda
grows; pFedMe's server step; every personal algorithm runs and reports
``personal_*``.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from rule_context import rule_context
from torch import nn

import fedsim
import strategies
from fedsim.client.training import PartyData, train_local
from fedsim.config.load import ConfigError, load_config
from fedsim.inputs.run_inputs import RunSettings, experiment_for
from fedsim.rundir.store import load_tensors, read_jsonl
from fedsim.schema.sections import TrainConfig
from fedsim.server.app import initial_state
from strategies.apfl import APFLParams, mix
from strategies.ditto import DittoParams, DittoRule
from strategies.fedrep import FedRepParams, FedRepRule
from strategies.personal import resolve_layers
from strategies.pfedme import PFedMeParams, PFedMeServer
from strategies.strategy import ClientOutcome, FederationSetup

PERSONAL = ["local", "fedper", "fedrep", "fedbabu", "lg-fedavg", "ditto", "apfl", "pfedme", "fedbn"]


class _Net(nn.Module):
    """encoder -> classifier, fedsim's key layout."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
        self.classifier = nn.Linear(8, 3)

    def forward(self, x):
        return self.classifier(self.encoder(x))


def _net(seed: int = 0) -> _Net:
    torch.manual_seed(seed)
    return _Net()


def _copy(sd) -> OrderedDict:
    return OrderedDict((k, v.detach().clone()) for k, v in sd.items())


def _data(n: int = 24, seed: int = 1) -> PartyData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return PartyData(x=x, y=y, indices=torch.arange(n), mean=None, std=None)


def _train(rule_cls, params, model, state=None, epochs=2, lr=0.1):
    glob = _copy(model.state_dict())
    ctx = rule_context(model, _net, params=params, global_state=glob, state=state, lr=lr)
    rule = rule_cls(ctx)
    cfg = TrainConfig(epochs=epochs, batch_size=8, lr=lr, momentum=0.0)
    stats = train_local(model, rule, _data(), cfg, epochs, torch.Generator().manual_seed(0), torch.device("cpu"))
    return rule, rule.on_train_end(stats.steps), glob


def _weights(run_dir) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)


def _initial(run_dir) -> dict:
    """The run's global model before round 1."""
    cfg = fedsim.load_config(run_dir / "config.yaml")
    return initial_state(experiment_for(RunSettings(cfg, str(run_dir))))


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------- layer names


def test_head_and_body_follow_the_model_layout():
    keys = ["encoder.0.weight", "encoder.0.bias", "projection.0.weight", "classifier.weight", "classifier.bias"]
    assert resolve_layers("head", keys) == ["classifier.weight", "classifier.bias"]
    assert resolve_layers("body", keys) == keys[:3]
    assert resolve_layers("projection,classifier", keys) == keys[2:]
    assert resolve_layers("", keys) == []
    with pytest.raises(ValueError, match="'proj' names no layer"):
        resolve_layers("proj", keys)


def test_a_layer_the_model_lacks_is_refused_before_the_run(tmp_path, tiny):
    cfg = tiny(strategy={"name": "fedper", "personal_layers": "projection"})
    with pytest.raises(ConfigError, match="strategy.personal_layers"):
        fedsim.run(cfg, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------- reductions to FedAvg


@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory, tiny):
    # on the same partition as the personalised runs (eval.local_test auto = split for them)
    return fedsim.run(tiny(eval={"local_test": "split"}), out=tmp_path_factory.mktemp("fedavg") / "run")


@pytest.mark.parametrize("name", ["fedper", "lg-fedavg"])
def test_no_personal_layers_is_fedavg(tmp_path, tiny, fedavg_run, name):
    res = fedsim.run(tiny(strategy={"name": name, "personal_layers": ""}), out=tmp_path / "run")
    assert _same(_weights(res.run_dir), _weights(fedavg_run.run_dir))
    assert res.summary["test_accuracy"] == fedavg_run.summary["test_accuracy"]


def test_apfl_with_alpha_fixed_at_zero_is_fedavg(tmp_path, tiny, fedavg_run):
    cfg = tiny(strategy={"name": "apfl", "alpha": 0.0, "adaptive_alpha": False})
    res = fedsim.run(cfg, out=tmp_path / "run")
    assert _same(_weights(res.run_dir), _weights(fedavg_run.run_dir))
    ours = [r["train_loss"] for r in read_jsonl(res.run_dir / "metrics.jsonl")]
    theirs = [r["train_loss"] for r in read_jsonl(fedavg_run.run_dir / "metrics.jsonl")]
    assert ours == theirs


def test_local_never_changes_the_global_model(tmp_path, tiny):
    res = fedsim.run(tiny(strategy={"name": "local"}, eval={"local_test": "split"}), out=tmp_path / "run")
    init = _initial(res.run_dir)
    assert _same(_weights(res.run_dir), init)
    rows = read_jsonl(res.run_dir / "metrics.jsonl")
    assert rows[0]["test_accuracy"] == rows[-1]["test_accuracy"]
    assert all(r["bytes_up"] < 1000 for r in rows)  # the replies carry no weights
    own = load_tensors(res.run_dir / "client_state" / "party_000000.pt")
    assert not torch.equal(own["classifier.weight"], init["classifier.weight"])  # the party's model trained
    # its own model beats the untouched global model on its own data
    assert res.summary["personal_test_accuracy"] > res.summary["local_test_accuracy"] + 0.1


# ---------------------------------------------------------------- client rules


def test_fedrep_with_zero_head_epochs_trains_only_the_body():
    model = _net()
    _, out, glob = _train(FedRepRule, FedRepParams(name="fedrep", head_epochs=0), model)
    sd = model.state_dict()
    for k in ("classifier.weight", "classifier.bias"):
        assert torch.equal(sd[k], glob[k])
    assert not torch.equal(sd["encoder.0.weight"], glob["encoder.0.weight"])
    assert out.shared_keys == ["encoder.0.weight", "encoder.0.bias"]
    assert list(out.state) == ["classifier.weight", "classifier.bias"]


def test_fedrep_trains_the_head_first_then_the_body():
    model = _net()
    rule, out, glob = _train(FedRepRule, FedRepParams(name="fedrep", head_epochs=3), model, epochs=0)
    # no body epochs: only the head moved, and the party keeps it
    sd = model.state_dict()
    assert torch.equal(sd["encoder.0.weight"], glob["encoder.0.weight"])
    assert not torch.equal(sd["classifier.weight"], glob["classifier.weight"])
    assert torch.equal(out.state["classifier.weight"], sd["classifier.weight"])


def test_fedrep_loads_the_partys_own_head():
    own_head = {k: v for k, v in _net(7).state_dict().items() if k.startswith("classifier")}
    model = _net()
    _, out, glob = _train(FedRepRule, FedRepParams(name="fedrep", head_epochs=0), model, state=own_head)
    assert torch.equal(model.state_dict()["classifier.weight"], own_head["classifier.weight"])


def test_ditto_personal_model_approaches_the_global_one_as_lamda_grows():
    distances = []
    for lamda in (0.0, 0.5, 2.0, 8.0):
        model = _net()
        rule, out, glob = _train(DittoRule, DittoParams(name="ditto", lamda=lamda, personal_epochs=3), model)
        v = out.state
        distances.append(float(sum(((v[k] - glob[k]) ** 2).sum() for k in glob)) ** 0.5)
    assert all(a > b for a, b in zip(distances, distances[1:])), distances
    assert distances[-1] < 0.25 * distances[0]


def test_ditto_reply_is_fedavgs_local_update():
    a, b = _net(), _net()
    _train(DittoRule, DittoParams(name="ditto", lamda=1.0), a)
    _train(strategies.ClientRule, strategies.StrategyParams(), b)
    assert _same(a.state_dict(), b.state_dict())


def test_apfl_personal_model_is_the_alpha_mixture():
    v = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    w = {"w": torch.tensor([5.0, -2.0]), "n": torch.tensor(9)}
    out = mix(0.25, v, w)
    assert torch.allclose(out["w"], torch.tensor([4.0, -1.0])) and int(out["n"]) == 3
    algo = strategies.get("apfl")
    state = {"v.w": v["w"], "v.n": v["n"], "alpha": torch.tensor(0.25)}
    got = algo.personalize(APFLParams(name="apfl"), w, state, None)
    assert torch.allclose(got["w"], torch.tensor([4.0, -1.0]))
    assert algo.personalize(APFLParams(name="apfl"), w, None, None) == w


def test_pfedme_server_step_beta():
    glob = OrderedDict(w=torch.tensor([0.0, 4.0]))
    outcomes = [
        ClientOutcome(0, 10, 1, {}, state=OrderedDict(w=torch.tensor([2.0, 0.0]))),
        ClientOutcome(1, 11, 3, {}, state=OrderedDict(w=torch.tensor([6.0, 8.0]))),
    ]
    for beta, expected in ((1.0, [5.0, 6.0]), (0.5, [2.5, 5.0]), (2.0, [10.0, 8.0])):
        server = PFedMeServer(PFedMeParams(name="pfedme", beta=beta))
        server.bind(FederationSetup(seed=0, node_of_party={0: 10, 1: 11}))
        got = server.aggregate(1, glob, outcomes).state["w"]
        assert torch.allclose(got, torch.tensor(expected)), (beta, got)


# ------------------------------------------------------------------ whole runs


# the algorithms another test here already runs whole are slow-only (suite time)
_RUN_ELSEWHERE = {"local", "fedper", "fedbabu", "lg-fedavg", "apfl"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in _RUN_ELSEWHERE else n for n in PERSONAL]
)
def test_every_personal_algorithm_reports_personal_metrics(tmp_path, tiny, name):
    cfg = tiny(strategy={"name": name}, eval={"local_test": "split"}, data={"n_train": 320})
    res = fedsim.run(cfg, out=tmp_path / "run")
    s = res.summary
    assert 0.0 <= s["personal_test_accuracy"] <= 1.0 and 0.0 <= s["local_test_accuracy"] <= 1.0
    rows = read_jsonl(res.run_dir / "parties.jsonl")
    assert {r["mode"] for r in rows} == {"local", "personal"}
    assert {r["party"] for r in rows if r["round"] == 2} == {0, 1, 2, 3}


def test_fedbabu_with_zero_finetune_epochs_equals_the_global_models_local_metric(tmp_path, tiny):
    cfg = tiny(strategy={"name": "fedbabu", "finetune_epochs": 0}, eval={"local_test": "split"})
    res = fedsim.run(cfg, out=tmp_path / "run")
    last = read_jsonl(res.run_dir / "metrics.jsonl")[-1]
    for stat in ("mean", "wmean", "std", "worst10", "best10"):
        assert last[f"personal_accuracy_{stat}"] == last[f"local_accuracy_{stat}"]
    # and FedBABU's head never moves: the global model's classifier is the initial one
    init = _initial(res.run_dir)
    assert torch.equal(_weights(res.run_dir)["classifier.weight"], init["classifier.weight"])
    assert not torch.equal(_weights(res.run_dir)["encoder.conv1.weight"], init["encoder.conv1.weight"])


def test_personal_evaluation_is_recorded_per_party(tmp_path, tiny):
    cfg = tiny(strategy={"name": "fedper"}, eval={"local_test": "split", "finetune_epochs": 1})
    res = fedsim.run(cfg, out=tmp_path / "run")
    rows = [r for r in read_jsonl(res.run_dir / "parties.jsonl") if r["round"] == 2]
    assert sorted({r["mode"] for r in rows}) == ["finetune", "local", "personal"]
    metrics = json.loads((res.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    local = [r for r in rows if r["mode"] == "local"]
    n = sum(r["n_test"] for r in local)
    pooled = sum(r["accuracy"] * r["n_test"] for r in local) / n
    assert metrics["local_accuracy_wmean"] == pytest.approx(pooled, abs=1e-12)
    assert metrics["local_accuracy_mean"] == pytest.approx(sum(r["accuracy"] for r in local) / len(local), abs=1e-12)
    assert metrics["local_accuracy_worst10"] == min(r["accuracy"] for r in local)  # 4 parties: the worst one
    accs = [r["accuracy"] for r in local]
    assert metrics["local_accuracy_worst"] == min(accs) and metrics["local_accuracy_best10"] == max(accs)
    jain = sum(accs) ** 2 / (len(accs) * sum(a * a for a in accs))
    assert metrics["local_accuracy_jain"] == pytest.approx(jain, abs=1e-12)
    assert res.summary["local_test_accuracy_jain"] == metrics["local_accuracy_jain"]
    assert res.summary["personal_test_accuracy_worst"] == metrics["personal_accuracy_worst"]
    assert res.summary["local_test_accuracy"] == metrics["local_accuracy_wmean"]
    assert res.summary["finetune_test_accuracy"] == metrics["finetune_accuracy_wmean"]


@pytest.mark.parametrize("name", ["fedper", "local", "fedbn"])
def test_a_personalised_algorithm_reports_its_personal_metrics_by_default(tiny, name):
    # eval.local_test defaults to auto: split for a personalised algorithm (its parties' own
    # models are what it trains), none for the others; none with one is refused
    assert load_config(tiny(strategy={"name": name})).eval.local_test == "split"
    assert load_config(tiny()).eval.local_test == "none"
    with pytest.raises(ConfigError, match=r"'eval.local_test' = 'none' with strategy '" + name):
        load_config(tiny(strategy={"name": name}, eval={"local_test": "none"}))


def test_fedper_at_its_defaults_records_personal_accuracy(tmp_path, tiny):
    res = fedsim.run(tiny(strategy={"name": "fedper"}, federation={"rounds": 1}), out=tmp_path / "run")
    assert 0.25 < res.summary["personal_test_accuracy"] <= 1.0
    assert (res.run_dir / "parties.jsonl").exists()
