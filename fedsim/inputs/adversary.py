"""Attacks and defences in a run: fedsim's side of ``attacks/`` and ``strategies.defences``.

* the malicious parties, from the config and the seed (:func:`malicious_parties`);
* the server's reply rules, in order: the attack's model poisoning, then the defence
  (:func:`server_rules`, installed on the strategy before its first round);
* the malicious parties' poisoned training data, built once per client process from
  the run's data set and partition (:func:`poison_training_set`): every engine trains on
  it, the batched one included, since a cohort indexes the same tensors;
* the attack's success on the test set after each central evaluation
  (:class:`AttackEvaluator`, ``attack_success_rate`` in ``metrics.jsonl``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

import attacks
from fedsim.data import DatasetBundle
from fedsim.data.transforms import to_float
from fedsim.errors import ConfigError
from fedsim.schema.experiment import ExperimentConfig
from strategies import defences
from strategies.replies import ReplyRule

log = logging.getLogger(__name__)


def malicious_parties(cfg: ExperimentConfig) -> list[int]:
    """The sorted ids of the run's malicious parties (none without an attack)."""
    return attacks.malicious_parties(cfg.attack, cfg.partition.n_parties, cfg.seed)


def server_rules(cfg: ExperimentConfig) -> tuple[ReplyRule, ...]:
    """The rules the server runs on each round's replies: model poisoning, then the defence."""
    rules = [
        attacks.build_rule(cfg.attack, cfg.partition.n_parties, cfg.seed),
        defences.build_rule(cfg.defence),
    ]
    return tuple(r for r in rules if r is not None)


def data_info(cfg: ExperimentConfig, bundle: DatasetBundle) -> attacks.DataInfo:
    return attacks.DataInfo(cfg.data.dataset, bundle.num_classes, bundle.is_image, bundle.input_shape)


def check_attack_data(cfg: ExperimentConfig, bundle: DatasetBundle) -> None:
    """ConfigError when the attack cannot poison this data set (run before anything is written)."""
    problem = attacks.get(cfg.attack.name).check_data(cfg.attack, data_info(cfg, bundle))
    if problem:
        raise ConfigError(problem)


def poison_training_set(
    cfg: ExperimentConfig, dataidxs: dict[int, Any], x: torch.Tensor, y: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training set as the parties see it: the malicious parties' samples poisoned by a
    data-poisoning attack (new tensors), or ``x``, ``y`` themselves."""
    attack = attacks.get(cfg.attack.name)
    bad = malicious_parties(cfg)
    if not attack.poisons_data or not bad:
        return x, y
    owned = {p: torch.as_tensor(dataidxs[p], dtype=torch.int64).to(x.device) for p in bad if p in dataidxs}
    log.info("attack %s poisons the training data of parties %s", cfg.attack.name, bad)
    return attack.poison_data(cfg.attack, x, y, owned, cfg.seed, num_classes)


class AttackEvaluator:
    """``attack_success_rate`` of a model on the run's test set (attacks with a target)."""

    def __init__(self, cfg: ExperimentConfig, bundle: DatasetBundle, device: torch.device) -> None:
        self.cfg, self.bundle, self.device = cfg, bundle, device
        self.attack = attacks.get(cfg.attack.name)

    def predict_with(self, model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """predict(x): the model's labels for raw test inputs, in evaluation batches."""
        b, bs = self.bundle, self.cfg.eval.batch_size

        @torch.inference_mode()
        def predict(x: torch.Tensor) -> torch.Tensor:
            model.eval()
            out = [
                model(to_float(x[i : i + bs].to(self.device), b.mean, b.std)).argmax(dim=1).cpu()
                for i in range(0, x.shape[0], bs)
            ]
            return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)

        return predict

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        """``{"attack_success_rate": ...}`` for ``model`` (its weights loaded), or nothing."""
        if self.cfg.attack.name == "none":
            return {}
        b = self.bundle
        rate = self.attack.success_rate(self.cfg.attack, self.predict_with(model), b.x_test, b.y_test, b.num_classes)
        return {} if rate is None else {"attack_success_rate": rate}


def summary_fields(cfg: ExperimentConfig, last: dict[str, Any]) -> dict[str, Any]:
    """``summary.json``'s attack and defence: names, malicious parties, the final success rate."""
    if cfg.attack.name == "none" and cfg.defence.name == "none":
        return {}
    return {
        "attack": cfg.attack.name,
        "malicious_parties": malicious_parties(cfg),
        "defence": cfg.defence.name,
        "attack_success_rate": last.get("attack_success_rate"),
    }
