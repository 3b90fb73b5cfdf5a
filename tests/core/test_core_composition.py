"""A strategy composed with extensions (strategies/extension.py): each takes part in the
round at its points, in the order the extensions were given, and the strategy's own
code never names privacy or reply rules."""

from __future__ import annotations

import ast
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

import strategies
from fedsim.util import flower_compat as fc
from strategies import defences
from strategies.extension import ServerExtension
from strategies.strategy import Aggregate, FedAvgServer, FederationSetup, RoundLog

ROOT = Path(__file__).resolve().parents[2]
PARTIES = range(4)


class Recording(ServerExtension):
    """Logs every hook it takes part in; optionally draws the cohort, adds config
    values, shifts the aggregate and keeps a checkpoint entry."""

    def __init__(self, name: str, log: list[str], cohort=None, config=None, shift=0.0) -> None:
        self.name, self.log, self.cohort, self.config, self.shift = name, log, cohort, config or {}, shift
        self.restored = None

    def sample(self, server_round, parties):
        self.log.append(f"{self.name}.sample")
        return self.cohort

    def client_config(self, server_round):
        return dict(self.config)

    def apply(self, server_round, global_state, outcomes, setup):
        self.log.append(f"{self.name}.apply")
        return {f"{self.name}_seen": float(len(outcomes))}

    def aggregate(self, inner, server_round, global_state, outcomes):
        self.log.append(f"{self.name}.aggregate")
        agg = inner.aggregate(server_round, global_state, outcomes)
        self.log.append(f"{self.name}.aggregated")
        return Aggregate(OrderedDict((k, v + self.shift) for k, v in agg.state.items()), agg.metrics)

    def after_aggregate(self, server_round, global_state, agg_state, setup):
        self.log.append(f"{self.name}.after")

    def checkpoint_state(self):
        return {f"{self.name}.count": torch.tensor([len(self.log)])}

    def load_checkpoint_state(self, state):
        self.restored = state.get(f"{self.name}.count")


class Logged(FedAvgServer):
    """FedAvg that logs when the algorithm aggregates."""

    log: list[str]

    def aggregate(self, server_round, global_state, outcomes):
        self.log.append("algorithm")
        return super().aggregate(server_round, global_state, outcomes)


def _strategy(*extensions: ServerExtension, log: list[str] | None = None) -> Logged:
    s = Logged().compose(extensions)
    s.log = log if log is not None else []
    s.bind(FederationSetup(seed=0, node_of_party={p: 100 + p for p in PARTIES}, param_keys=frozenset({"w"})))
    return s


def _replies(states: list[list[float]]) -> list[Message]:
    fc.set_task_identity(1)
    out = []
    for party, w in enumerate(states):
        sent = Message(RecordDict(), dst_node_id=100 + party, message_type="train")
        fc.set_message_id(sent, f"m{party}")
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(np.asarray(w, dtype=np.float32))}),
                "metrics": MetricRecord({"num-examples": 10}),
            }
        )
        out.append(Message(content, reply_to=sent))
    return out


def _round(s: Logged, states: list[list[float]]) -> RoundLog:
    s.round_log = RoundLog(round=1, global_state=OrderedDict(w=torch.zeros(2)), sampled=list(range(len(states))))
    s.aggregate_train(1, _replies(states))
    return s.round_log


def test_extensions_act_in_their_order_and_wrap_the_aggregate_first_outermost():
    log: list[str] = []
    s = _strategy(Recording("a", log, shift=1.0), Recording("b", log, shift=10.0), log=log)
    rl = _round(s, [[1.0, 1.0], [3.0, 3.0]])
    assert log == [
        "a.apply",
        "b.apply",
        "a.aggregate",
        "b.aggregate",
        "algorithm",
        "b.aggregated",
        "a.aggregated",
        "a.after",
        "b.after",
    ]
    # the mean is 2; b shifts it first (inner), a last (outer)
    assert rl.agg_state["w"].tolist() == [13.0, 13.0]
    assert list(rl.server_metrics) == ["a_seen", "b_seen"]


def test_without_extensions_the_strategy_aggregates_as_the_algorithm():
    s = _strategy()
    assert _round(s, [[1.0, 1.0], [3.0, 3.0]]).agg_state["w"].tolist() == [2.0, 2.0]
    assert s.extensions == () and s.state_dict() == {}


def test_an_empty_cohort_keeps_the_model_unless_an_extension_releases_it():
    log: list[str] = []
    quiet = _strategy(Recording("a", log), log=log)
    rl = _round(quiet, [])
    assert log == [] and rl.agg_state is rl.global_state

    class Releasing(Recording):
        releases_empty_cohort = True

        def aggregate(self, inner, server_round, global_state, outcomes):
            self.log.append(f"{self.name}.release")
            return Aggregate(OrderedDict((k, v + 1.0) for k, v in global_state.items()))

    s = _strategy(Recording("a", log), Releasing("dp", log), log=log)
    rl = _round(s, [])
    assert log == ["a.apply", "dp.apply", "a.aggregate", "dp.release", "a.aggregated", "a.after", "dp.after"]
    assert rl.agg_state["w"].tolist() == [1.0, 1.0]


def test_the_first_extension_that_draws_the_cohort_wins_else_the_strategy_draws():
    log: list[str] = []
    drawn = _strategy(Recording("a", log), Recording("b", log, cohort=[1, 3]), Recording("c", log, cohort=[0]))
    assert drawn._train_cohort(1) == [1, 3]
    assert log == ["a.sample", "b.sample"]  # c is not asked
    plain = _strategy(Recording("a", []))
    assert plain._train_cohort(1) == plain.sample(1, "fit", 1.0, 1) == list(PARTIES)


def test_client_config_is_the_algorithms_then_each_extensions_in_order():
    class WithConfig(Logged):
        def client_config(self, server_round):
            return {"lr": 0.1, "shared": "algorithm"}

    s = WithConfig().compose(
        [Recording("a", [], config={"shared": "a", "clip": 1.0}), Recording("b", [], config={"shared": "b"})]
    )
    s.bind(FederationSetup(seed=0, node_of_party={p: 100 + p for p in PARTIES}))
    fc.set_task_identity(1)

    class Nodes:
        def get_node_ids(self):
            return [100 + p for p in PARTIES]

    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    sent = list(s.configure_train(1, arrays, ConfigRecord({"epochs": 2}), Nodes()))
    config = dict(sent[0].content["config"])
    assert config == {"epochs": 2, "lr": 0.1, "shared": "b", "clip": 1.0, "server-round": 1}


def test_checkpoint_entries_are_the_algorithms_then_the_extensions_and_come_back():
    class Stateful(Logged):
        state_attributes = ("momentum",)
        momentum = torch.ones(2)

    a, b = Recording("a", ["x"]), Recording("b", ["x", "y"])
    s = Stateful().compose([a, b])
    saved = s.state_dict()
    assert list(saved) == ["momentum", "a.count", "b.count"]
    fresh_a, fresh_b = Recording("a", []), Recording("b", [])
    again = Stateful().compose([fresh_a, fresh_b])
    again.momentum = torch.zeros(2)
    again.load_state_dict(saved)
    assert torch.equal(again.momentum, torch.ones(2))
    assert fresh_a.restored.tolist() == [1] and fresh_b.restored.tolist() == [2]


def test_build_composes_reply_rules_with_the_algorithm():
    rule = defences.build_rule(defences.get("centred-clip").Params(name="centred-clip"))
    s = strategies.build(strategies.make_params({"name": "fedavgm"}), [rule])
    assert s.extensions == (rule,)
    assert list(s.state_dict())[-1] == "defence.centre"


def test_privacy_keeps_its_ledger_under_its_old_checkpoint_key(tiny):
    pytest.importorskip("dp_accounting", reason="pip install 'fedsim[privacy]'")
    from fedsim.config.load import load_config
    from fedsim.privacy.run import PrivacyRun, privacy_for

    cfg = load_config(tiny(privacy={"mode": "central-fixed"}))
    dataidxs = {p: np.arange(100) for p in PARTIES}
    run = privacy_for(cfg, lambda: dataidxs, lambda: [])
    assert isinstance(run, PrivacyRun)
    run.account(RoundLog(round=1))
    s = strategies.build(strategies.make_params({"name": "fedavg"}), [run])
    saved = s.state_dict()
    assert list(saved) == ["__privacy__"]
    fresh = PrivacyRun(cfg, {p: 100 for p in PARTIES})
    strategies.build(strategies.make_params({"name": "fedavg"}), [fresh]).load_state_dict(saved)
    assert fresh.round == 1 and fresh.spent() == run.spent()
    assert privacy_for(load_config(tiny()), lambda: pytest.fail("read without privacy"), lambda: []) is None


# ------------------------------------------------------------------ the code


def _identifiers(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def test_the_strategy_names_neither_privacy_nor_reply_rules():
    """strategies/strategy.py does not branch on them: its code never names them (the
    extensions it is composed with are all it knows)."""
    names = _identifiers(ast.parse((ROOT / "strategies" / "strategy.py").read_text()))
    assert [n for n in names if "privacy" in n.lower() or "rule" in n.lower()] == []


def _reads_privacy_mode(tree: ast.AST) -> bool:
    """An attribute ``.mode`` of ``<x>.privacy`` or of a name bound to ``<x>.privacy``."""
    aliases = {
        t.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute) and node.value.attr == "privacy"
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    return any(
        isinstance(node, ast.Attribute)
        and node.attr == "mode"
        and (
            (isinstance(node.value, ast.Attribute) and node.value.attr == "privacy")
            or (isinstance(node.value, ast.Name) and node.value.id in aliases)
        )
        for node in ast.walk(tree)
    )


def test_only_privacy_reads_the_privacy_mode():
    readers = sorted(
        path.relative_to(ROOT).as_posix()
        for pkg in ("fedsim", "strategies", "attacks", "partitioners")
        for path in (ROOT / pkg).rglob("*.py")
        if not path.relative_to(ROOT).as_posix().startswith("fedsim/privacy/")
        and _reads_privacy_mode(ast.parse(path.read_text()))
    )
    # the config's validation asks the privacy modes' declarations (fedsim/config/plugins.py)
    assert readers == []
