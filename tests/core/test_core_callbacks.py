"""The round's records as callbacks (fedsim/server/callbacks/): one order, stated once,
run by the Recorder on one RoundRecord."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch

import fedsim
import fedsim.server.app as server_app
import fedsim.server.callbacks as callbacks_pkg
from fedsim.server.app import RunHooks
from fedsim.server.callbacks import RoundCallback, RoundRecord, RunProgress
from fedsim.server.callbacks.privacy import PrivacyAccounting
from fedsim.server.recorder import Recorder
from strategies.strategy import RoundLog

#: every callback, in the order round_callbacks states
ORDER = [
    ("privacy", "PrivacyAccounting"),
    ("training", "TrainingRow"),
    ("heterogeneity", "ModelHeterogeneity"),
    ("divergence", "DivergenceCheck"),
    ("evaluation", "CentralEvaluation"),
    ("party_evaluation", "PartyEvaluation"),
    ("divergence", "DivergenceCheck"),
    ("validation", "ClientSpread"),
    ("records", "Records"),
    ("checkpoints", "Checkpoints"),
    ("trackers", "Trackers"),
    ("progress", "Progress"),
]


def test_the_order_is_stated_once_in_the_packages_docstring():
    stated = re.findall(r"^\d+\. :mod:`\.(\w+)`", callbacks_pkg.__doc__, flags=re.M)
    assert stated == [module for module, _ in ORDER]


def test_a_run_with_every_part_runs_every_callback_in_that_order(tmp_path, tiny, monkeypatch):
    pytest.importorskip("dp_accounting", reason="pip install 'fedsim[privacy]'")
    seen: list[Recorder] = []

    class Spy(Recorder):
        def __init__(self, run, callbacks):
            super().__init__(run, callbacks)
            seen.append(self)

    monkeypatch.setattr(server_app, "Recorder", Spy)
    rows: list[dict] = []
    cfg = tiny(
        federation={"rounds": 1},
        privacy={"mode": "central-fixed"},
        eval={"model_heterogeneity": True, "local_test": "split"},
    )
    res = fedsim.run(cfg, out=tmp_path / "r", hooks=RunHooks(on_round=rows.append))
    assert res.summary["status"] == "finished"
    (recorder,) = seen
    got = [(type(c).__module__.rsplit(".", 1)[-1], type(c).__name__) for c in recorder.callbacks]
    assert got == ORDER
    checks = [c for c in recorder.callbacks if type(c).__name__ == "DivergenceCheck"]
    assert [c.after_evaluation for c in checks] == [False, True]
    # the row as written: privacy's values with the server's, the test metrics after them
    (row,) = rows
    keys = list(row)
    assert keys[0] == "round" and keys[-1] == "round_time_s"
    assert keys.index("epsilon") < keys.index("test_accuracy") < keys.index("local_accuracy_wmean")


def test_a_plain_run_leaves_out_the_steps_it_does_not_need(tmp_path, tiny, monkeypatch):
    seen: list[Recorder] = []

    class Spy(Recorder):
        def __init__(self, run, callbacks):
            super().__init__(run, callbacks)
            seen.append(self)

    monkeypatch.setattr(server_app, "Recorder", Spy)
    fedsim.run(
        tiny(federation={"rounds": 1}, eval={"model_heterogeneity": False, "local_test": "none"}), out=tmp_path / "r"
    )
    names = [type(c).__name__ for c in seen[0].callbacks]
    left_out = ("PrivacyAccounting", "ModelHeterogeneity", "PartyEvaluation", "Progress")
    assert names == [n for _, n in ORDER if n not in left_out]


class Mark(RoundCallback):
    def __init__(self, name: str, log: list[str], stop: bool = False, last: bool = False) -> None:
        self.name, self.log, self.stop, self.last = name, log, stop, last

    def on_round(self, rec: RoundRecord) -> None:
        self.log.append(self.name)
        rec.row[self.name] = True
        rec.stop = rec.stop or self.stop
        rec.last = rec.last or self.last

    def on_abort(self, rl):
        self.log.append(f"{self.name}.abort")

    def on_close(self, exc):
        self.log.append(f"{self.name}.close:{type(exc).__name__ if exc else None}")

    def on_finish(self, summary):
        self.log.append(f"{self.name}.finish")


def _log(round_: int = 1) -> RoundLog:
    return RoundLog(round=round_, agg_state=OrderedDict(w=torch.ones(1)))


def test_the_recorder_runs_its_callbacks_in_order_on_one_record():
    log: list[str] = []
    run = RunProgress([], 0.0)
    rec = Recorder(run, [Mark("a", log), Mark("b", log), Mark("c", log)])
    assert rec(_log()) is False
    assert log == ["a", "b", "c"]
    assert torch.equal(rec.last_state["w"], torch.ones(1))
    rec.record_failed_round(_log(2))
    rec.finish({})
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        rec.close()
    assert log[3:] == [
        "a.abort",
        "b.abort",
        "c.abort",
        "a.finish",
        "b.finish",
        "c.finish",
        "a.close:KeyboardInterrupt",
        "b.close:KeyboardInterrupt",
        "c.close:KeyboardInterrupt",
    ]


def test_the_run_stops_when_a_callback_says_so_and_a_refused_model_is_not_kept():
    run = RunProgress([], 0.0, last_state=OrderedDict(w=torch.zeros(1)))
    assert Recorder(run, [Mark("a", [], stop=True)])(_log()) is True
    assert Recorder(run, [Mark("a", [], last=True)])(_log()) is True
    run.last_state = OrderedDict(w=torch.zeros(1))
    Recorder(run, [Mark("a", [])])(_log(), forced_reason="the aggregate holds NaN")
    assert torch.equal(run.last_state["w"], torch.zeros(1))


def test_privacy_accounts_a_round_unless_its_model_was_refused():
    class Ledger:
        rounds: list[int] = []

        def account(self, rl):
            self.rounds.append(rl.round)
            return rl.round == 2  # the budget allows no third round

    ledger = Ledger()
    accounting = PrivacyAccounting(ledger)  # type: ignore[arg-type]
    for r, forced in ((1, None), (2, None), (3, "non-finite")):
        rec = RoundRecord(_log(r), {"round": r}, None, forced)
        accounting.on_round(rec)
        assert rec.last is (r == 2)
    assert ledger.rounds == [1, 2]


def test_a_step_is_due_every_few_rounds_in_the_last_and_before_a_stop():
    def rec(r, state=True, stop=False, last=False):
        return RoundRecord(RoundLog(round=r), {}, OrderedDict() if state else None, stop=stop, last=last)

    assert [r for r in range(1, 8) if rec(r).due(3, 7)] == [3, 6, 7]
    assert rec(4, stop=True).due(3, 7) and rec(4, last=True).due(3, 7)
    assert not rec(3, state=False).due(3, 7) and not rec(3).due(0, 7)
