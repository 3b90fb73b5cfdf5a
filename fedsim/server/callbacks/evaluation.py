"""Central evaluation: the global model on the test set, every ``federation.eval_every``
rounds, in the run's last round and in the last before a stop; with an attack that has
a target, the attack's success rate on the same weights."""

from __future__ import annotations

from fedsim.inputs.adversary import AttackEvaluator
from fedsim.schema.experiment import ExperimentConfig
from fedsim.server.callbacks.base import RoundCallback, RoundRecord
from fedsim.server.evaluation import CentralEvaluator


class CentralEvaluation(RoundCallback):
    def __init__(self, cfg: ExperimentConfig, evaluator: CentralEvaluator, attack: AttackEvaluator) -> None:
        self.cfg, self.evaluator, self.attack = cfg, evaluator, attack

    def on_round(self, rec: RoundRecord) -> None:
        if not rec.due(self.cfg.federation.eval_every, self.cfg.federation.rounds):
            return
        rec.row.update(self.evaluator(rec.state))
        rec.row.update(self.attack(self.evaluator.model))  # the weights just evaluated
        rec.evaluated = True
