"""The experiment: the tree of config sections (:mod:`fedsim.schema.sections`, those that
plug-ins extend) used by OmegaConf as a structured config (interpolation and type
conversion come for free).

Only data: loading and validation are :mod:`fedsim.config.load` and
:mod:`fedsim.config.validate`, a layer up, so that the data sets, models and other
plug-ins read their sections without importing the loader that validates against their
registries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import ListConfig

from attacks.params import AttackParams
from fedsim.errors import ConfigError
from fedsim.schema.sections import (
    AsyncConfig,
    CommConfig,
    DataConfig,
    EngineConfig,
    EvalConfig,
    FederationConfig,
    ModelConfig,
    OutputConfig,
    PartitionConfig,
    PrivacyConfig,
    SystemConfig,
    TrainConfig,
)
from strategies.defences import DefenceParams
from strategies.params import StrategyParams
from strategies.selection import SelectionParams


@dataclass
class ExperimentConfig:
    """One federated experiment. See README "Config reference" for every key."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # the chosen algorithm's own dataclass (strategies/<name>.py): name + its hyperparameters
    strategy: StrategyParams = field(default_factory=StrategyParams)
    # the chosen attack's own dataclass (attacks/<name>.py): name, malicious parties, its parameters
    attack: AttackParams = field(default_factory=AttackParams)
    # the chosen defence's own dataclass (strategies/<name>.py): a server rule before aggregate
    defence: DefenceParams = field(default_factory=DefenceParams)
    federation: FederationConfig = field(default_factory=FederationConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    # device profiles and the simulated clock (fedsim/system/): source none = no clock
    system: SystemConfig = field(default_factory=SystemConfig)
    # the chosen compressor's own dataclass (fedsim/comm/codecs/<name>.py) and the byte budget
    comm: CommConfig = field(default_factory=CommConfig)
    # the chosen client selector's own dataclass (strategies/selection/<name>.py): uniform by default
    selection: SelectionParams = field(default_factory=SelectionParams)
    # asynchronous training on the simulated clock (fedsim/asynchronous/): mode off = synchronous rounds
    asynchronous: AsyncConfig = field(default_factory=AsyncConfig)


def epoch_range(epochs: Any) -> tuple[int, int]:
    """``train.epochs`` as (lo, hi): an int n is (n, n)."""
    if isinstance(epochs, bool):
        raise ConfigError(f"config key 'train.epochs' = {epochs!r} must be an int >= 1 or a range [lo, hi]")
    if isinstance(epochs, int):
        return epochs, epochs
    if (
        isinstance(epochs, (list, tuple, ListConfig))
        and len(epochs) == 2
        and all(isinstance(e, int) and not isinstance(e, bool) for e in epochs)
    ):
        return int(epochs[0]), int(epochs[1])
    raise ConfigError(f"config key 'train.epochs' = {epochs!r} must be an int >= 1 or a range [lo, hi] of ints")


__all__ = [
    "AsyncConfig",
    "CommConfig",
    "DataConfig",
    "EngineConfig",
    "EvalConfig",
    "ExperimentConfig",
    "FederationConfig",
    "ModelConfig",
    "OutputConfig",
    "PartitionConfig",
    "PrivacyConfig",
    "SystemConfig",
    "TrainConfig",
    "epoch_range",
]
