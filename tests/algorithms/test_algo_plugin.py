"""The algorithm plug-in: an algorithm is one file (here: defined in this test), its
hyperparameters are validated against its own dataclass, and every declared
hyperparameter changes what a run computes (no key is accepted and ignored)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fedsim
import strategies
from fedsim.cli import main
from fedsim.config.load import load_config
from fedsim.errors import ConfigError
from fedsim.rundir.store import load_tensors, read_jsonl
from strategies import Algorithm, ClientRule, StrategyParams, hp, register, unregister

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SmoothParams(StrategyParams):
    eps: float = hp(0.1, ge=0, lt=1, help="label smoothing of the local loss", source="this test")


class SmoothRule(ClientRule):
    def loss(self, x, y):
        logits = self.ctx.model(x)
        return F.cross_entropy(logits, y, label_smoothing=self.ctx.params.eps), logits


class ToyAlgorithm(Algorithm):
    name = "toy-smooth"
    summary = "FedAvg with label-smoothed local training"
    Params = SmoothParams
    Rule = SmoothRule


@pytest.fixture
def toy():
    register(ToyAlgorithm)
    yield ToyAlgorithm
    unregister(ToyAlgorithm.name)


def test_an_algorithm_defined_in_a_test_registers_validates_runs_and_rejects_other_keys(tmp_path, tiny, toy):
    assert "toy-smooth" in strategies.available()
    cfg = load_config(tiny(strategy={"name": "toy-smooth", "eps": 0.2}))
    assert isinstance(cfg.strategy, SmoothParams) and cfg.strategy.eps == 0.2
    assert load_config(tiny(strategy={"name": "toy-smooth"})).strategy.eps == 0.1  # its default
    with pytest.raises(ConfigError, match=r"'strategy.eps' = 1.5 is out of range .*allowed: \[0, 1\)"):
        load_config(tiny(strategy={"name": "toy-smooth", "eps": 1.5}))
    with pytest.raises(ConfigError, match=r"strategy 'toy-smooth' has no parameter 'strategy.mu'; its parameters: eps"):
        load_config(tiny(strategy={"name": "toy-smooth", "mu": 0.1}))
    a = fedsim.run(tiny(strategy={"name": "toy-smooth", "eps": 0.0}), out=tmp_path / "eps0")
    b = fedsim.run(tiny(strategy={"name": "toy-smooth", "eps": 0.3}), out=tmp_path / "eps3")
    c = fedsim.run(tiny(strategy={"name": "fedavg"}), out=tmp_path / "fedavg")
    assert a.summary["rounds"] == b.summary["rounds"] == 2
    wa, wb, wc = (torch.load(r.run_dir / "model.pt", weights_only=True) for r in (a, b, c))
    # eps = 0 is plain cross-entropy: FedAvg's run exactly; eps > 0 changes the training
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    assert "eps" in (a.run_dir / "config.yaml").read_text()


def test_keys_of_another_algorithm_are_refused_with_the_keys_it_has(tiny):
    with pytest.raises(ConfigError, match=r"strategy 'fedavg' has no parameter 'strategy.mu'; its parameters: none"):
        load_config(tiny(strategy={"name": "fedavg", "mu": 0.01}))
    # MOON's contrastive weight is MOON's own field, not FedProx's
    with pytest.raises(ConfigError, match=r"strategy 'fedprox' has no parameter 'strategy.temperature'"):
        load_config(tiny(strategy={"name": "fedprox", "temperature": 0.5}))
    # the removed FedOpt client learning rate: train.lr is the clients' learning rate
    with pytest.raises(
        ConfigError,
        match=r"strategy 'fedadam' has no parameter 'strategy.eta_l' \(did you mean 'eta'\?\); its parameters: eta, beta_1, beta_2, tau",
    ):
        load_config(tiny(strategy={"name": "fedadam", "eta_l": 0.1}))
    # an override naming another algorithm is checked against the new one
    with pytest.raises(ConfigError, match="did you mean 'server_lr'"):
        load_config(tiny(strategy={"name": "scaffold"}), ["strategy.server_rl=0.5"])


def test_constraints_on_the_rest_of_the_config(tiny):
    for name, over, fragment in [
        ("scaffold", {"train": {"optimizer": "adam"}}, "scaffold' needs train.optimizer: sgd"),
        ("fednova", {"train": {"optimizer": "adamw"}}, "fednova' needs train.optimizer: sgd"),
        ("feddc", {"train": {"optimizer": "adam"}}, "feddc' needs train.optimizer: sgd"),
        ("feddc", {"train": {"momentum": 0.9}}, "feddc' needs train.momentum: 0"),
        ("moon", {}, "needs model.projection_head: true"),
        ("fedlc", {"train": {"loss": "focal"}}, "needs train.loss: ce"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            load_config(tiny(strategy={"name": name}, **over))


def test_the_cli_refuses_another_algorithms_key_with_one_line(tmp_path, tiny, capsys):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    assert main(["run", str(path), "strategy.name=fedyogi", "strategy.eta_l=0.01", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "fedsim: error: strategy 'fedyogi' has no parameter 'strategy.eta_l' (did you mean 'eta'?); its parameters: eta, beta_1, beta_2, tau"
    ]
    assert not (tmp_path / "r").exists()


def test_fedsim_strategies_lists_every_algorithm_with_its_hyperparameters(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    for name in strategies.available():
        assert name in out
        for h in strategies.hyperparameters(strategies.get(name).Params):
            assert f"{h.name}" in out and h.info.help in out


def test_the_readme_strategy_table_is_generated_from_the_registry():
    readme = (ROOT / "README.md").read_text()
    assert strategies.table_markdown() in readme, (
        "regenerate it: python -c 'import strategies; print(strategies.table_markdown())'"
    )


def test_every_hyperparameter_is_declared_with_a_meaning_and_a_source():
    for name in strategies.available():
        algo = strategies.get(name)
        assert algo.summary and algo.paper, name
        for h in strategies.hyperparameters(algo.Params):
            assert h.info.help and h.info.source, (name, h.name)
            assert h.info.admits(h.default), (name, h.name)


_PERSONAL = {"eval": {"local_test": "split"}}

# (algorithm, key, another allowed value, rounds, overrides): the value must change the run
CHANGES = [
    ("fedprox", "mu", 0.5, 1, {}),
    ("scaffold", "server_lr", 0.5, 1, {}),
    ("moon", "mu", 3.0, 2, {"model": {"projection_head": True}}),
    ("moon", "temperature", 0.1, 2, {"model": {"projection_head": True}}),
    ("moon", "buffer_size", 2, 3, {"model": {"projection_head": True}}),
    ("feddyn", "alpha", 0.5, 1, {}),
    ("feddyn", "max_grad_norm", 0.05, 1, {}),
    ("feddc", "alpha", 0.5, 1, {"train": {"momentum": 0.0}}),
    ("feddc", "max_grad_norm", 0.05, 1, {"train": {"momentum": 0.0}}),
    ("fedlc", "tau", 0.3, 1, {}),
    ("fedavgm", "server_lr", 0.5, 1, {}),
    ("fedavgm", "server_momentum", 0.5, 2, {}),
    ("fedadam", "eta", 0.02, 1, {}),
    ("fedadam", "beta_1", 0.5, 1, {}),
    ("fedadam", "beta_2", 0.5, 2, {}),
    ("fedadam", "tau", 0.1, 1, {}),
    ("fedyogi", "eta", 0.02, 1, {}),
    ("fedyogi", "beta_1", 0.5, 1, {}),
    ("fedyogi", "beta_2", 0.5, 2, {}),
    ("fedyogi", "tau", 0.1, 1, {}),
    ("fedadagrad", "eta", 0.02, 1, {}),
    ("fedadagrad", "tau", 0.1, 1, {}),
    # FedTrimmedAvg trims int(beta n) per side: 0 of 4 clients at the default 0.2
    ("fedtrimmedavg", "beta", 0.0, 1, {"partition": {"n_parties": 10}}),
    # Krum scores each client over its n - f - 2 nearest: with 6 clients the default f = 1
    # (the most 6 tolerate, n > 2f + 2) leaves 3, f = 0 leaves 4
    ("krum", "num_malicious", 0, 1, {"partition": {"n_parties": 6}}),
    # personalised algorithms: a key may change only the parties' own models (client
    # state) or their evaluation (parties.jsonl), which the test compares too
    ("fedper", "personal_layers", "body", 1, _PERSONAL),
    ("fedrep", "personal_layers", "body", 1, _PERSONAL),
    ("fedrep", "head_epochs", 0, 1, _PERSONAL),
    ("fedbabu", "personal_layers", "body", 1, _PERSONAL),
    ("fedbabu", "finetune_epochs", 0, 1, _PERSONAL),
    ("lg-fedavg", "personal_layers", "head", 1, _PERSONAL),
    ("ditto", "lamda", 0.1, 1, _PERSONAL),
    ("ditto", "personal_epochs", 2, 1, _PERSONAL),
    ("apfl", "alpha", 0.2, 1, _PERSONAL),
    ("apfl", "adaptive_alpha", False, 1, _PERSONAL),
    ("pfedme", "lamda", 5.0, 1, {}),
    ("pfedme", "personal_lr", 0.05, 1, {}),
    ("pfedme", "inner_steps", 2, 1, {}),
    ("pfedme", "beta", 0.5, 1, {}),
    # Multi-Krum averages m = n - f of the n replies: the default f = 1 of 6 clients drops
    # one (f = 0: plain FedAvg)
    ("multi-krum", "num_malicious", 0, 1, {"partition": {"n_parties": 6}}),
    ("multi-krum", "num_selected", 2, 1, {}),
    # Bulyan needs n >= 4f + 3: the default f = 1 with 7 clients (f = 0: the mean of the beta = n closest)
    ("bulyan", "num_malicious", 0, 1, {"partition": {"n_parties": 7}}),
    # q-FFL: q reweighs by the reported losses; L sets the step (L = 1/train.lr = 10 by default)
    ("qffl", "q", 5.0, 1, {}),
    ("qffl", "lipschitz", 3.0, 1, {}),
    # AFL: lambda's step acts from the second round on; a size-start weighs unequal parties otherwise
    ("afl", "lr_lambda", 0.5, 2, {}),
    ("afl", "init", "size", 1, {}),
]


def test_the_change_table_covers_every_declared_hyperparameter():
    declared = {
        (n, h.name) for n in strategies.available() for h in strategies.hyperparameters(strategies.get(n).Params)
    }
    assert declared == {(n, k) for n, k, *_ in CHANGES}


_DEFAULT_RUNS: dict = {}


# a representative set in the default run (client term, server state, contrastive,
# server optimiser, robust, personal); every key with python -m pytest -m slow
_DEFAULT_RUN = {
    ("fedprox", "mu"),
    ("scaffold", "server_lr"),
    ("moon", "mu"),
    ("fedadam", "eta"),
    ("fedtrimmedavg", "beta"),
    ("fedrep", "head_epochs"),
    ("ditto", "lamda"),
    ("bulyan", "num_malicious"),
}


@pytest.mark.parametrize(
    "name, key, value, rounds, over",
    [c if c[:2] in _DEFAULT_RUN else pytest.param(*c, marks=pytest.mark.slow) for c in CHANGES],
    ids=[f"{n}.{k}" for n, k, *_ in CHANGES],
)
def test_every_hyperparameter_changes_the_run(tmp_path, tiny, name, key, value, rounds, over):
    def run(tag, **extra):
        sections = {
            "federation": {"rounds": rounds},
            "train": {"epochs": 1},
            "eval": {"train_sample": 0, "model_heterogeneity": False},
        }
        for section, values in over.items():
            sections.setdefault(section, {}).update(values)
        cfg = tiny(strategy={"name": name, **extra}, output={"plots": False, "checkpoint_every": 0}, **sections)
        r = fedsim.run(cfg, out=tmp_path / tag)
        seen = dict(torch.load(r.run_dir / "model.pt", weights_only=True))
        for f in sorted((r.run_dir / "client_state").glob("party_*.pt")):
            seen.update({f"{f.name}/{k}": v for k, v in load_tensors(f).items()})
        if (r.run_dir / "parties.jsonl").exists():
            rows = read_jsonl(r.run_dir / "parties.jsonl")
            seen["parties/loss"] = torch.tensor([row["loss"] for row in rows])
        return seen

    # one run at the defaults per algorithm and setting, shared by its hyperparameters
    ref = (name, rounds, repr(over))
    if ref not in _DEFAULT_RUNS:
        _DEFAULT_RUNS[ref] = run("default")
    default, changed = _DEFAULT_RUNS[ref], run("changed", **{key: value})
    assert default.keys() != changed.keys() or any(not torch.equal(default[k], changed[k]) for k in default), (
        f"{name}: strategy.{key}={value} changed nothing"
    )


def test_a_rule_with_a_loss_of_its_own_gives_the_same_weights_on_both_engines(tmp_path, tiny, toy):
    # SmoothRule overrides loss and says nothing about batching: the batched engine must
    # not train it as plain cross-entropy (it runs it one party at a time)
    assert SmoothRule.batchable is False and strategies.get("fedprox").Rule.batchable is True
    cfg = tiny(strategy={"name": "toy-smooth", "eps": 0.3}, model={"name": "mlp"}, federation={"rounds": 1})
    one = fedsim.run(cfg, ["engine.batch_clients=off"], out=tmp_path / "one")
    batched = fedsim.run(cfg, ["engine.batch_clients=on"], out=tmp_path / "batched")
    w1 = torch.load(one.run_dir / "model.pt", weights_only=True)
    wb = torch.load(batched.run_dir / "model.pt", weights_only=True)
    for k in w1:
        torch.testing.assert_close(wb[k], w1[k], rtol=0, atol=1e-6)
