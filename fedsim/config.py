"""Typed experiment configuration: YAML + dotted overrides -> validated ExperimentConfig.

The schema is a tree of dataclasses used as an OmegaConf structured config, so YAML
files get interpolation (``${train.lr}``) and type conversion for free. Validation
happens in two steps before anything runs:

1. every key the user wrote is checked against the schema, and an unknown key names
   the nearest valid one (``data.datset`` -> "did you mean data.dataset?");
2. every value is checked against its allowed set or range (:func:`validate`).

Errors are :class:`~fedsim.errors.ConfigError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import strategies
from strategies.params import StrategyParams, hyperparameters, out_of_range

from .errors import ConfigError


@dataclass
class DataConfig:
    """``data.*``: which dataset, where it lives, and how parties see it."""

    dataset: str = "synthetic-images"
    root: str = "data"
    download: bool = False
    val_fraction: float = 0.0
    feature_noise: float = 0.0
    # seed of generated datasets (synthetic, synthetic-images): fixed across runs, so
    # that the run's ``seed`` varies the split and the training, not the task itself
    seed: int = 0
    # synthetic-images: sizes and shape of the generated set
    n_train: int = 5000
    n_test: int = 1000
    image_shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    num_classes: int = 10
    noise: float = 0.6
    # synthetic (FedProx): Synthetic(alpha, beta), one group per party by default
    synthetic_alpha: float = 1.0
    synthetic_beta: float = 1.0
    num_groups: int = 0
    # CIFAR-style augmentation (crop with padding 4 + horizontal flip); None = the
    # dataset's default (on for cifar10/cifar100, off otherwise)
    augment: Optional[bool] = None
    # K-fold cross-validation over the pooled training data: with cv_folds = K > 1, fold
    # cv_fold is held out as the evaluation set and the other folds are partitioned
    cv_folds: int = 0
    cv_fold: int = 0
    # images of hf and imagefolder resized to image_size x image_size (0 = as stored)
    image_size: int = 0
    # cifar100: train on the 100 fine classes or the 20 superclasses (coarse)
    cifar100_labels: str = "fine"
    # hf (Hugging Face datasets): a save_to_disk directory, a directory of data files
    # (parquet, arrow, ...) or a Hub name found in the local cache
    hf_path: Optional[str] = None
    hf_split_train: str = "train"
    hf_split_test: str = "test"
    hf_image_key: str = "image"
    # set for character sequences (then hf_image_key is not read)
    hf_text_key: Optional[str] = None
    hf_label_key: str = "label"
    # natural groups (writer, user) for partition.scheme natural
    hf_group_key: Optional[str] = None


@dataclass
class PartitionConfig:
    """``partition.*``: how the training set is split into parties (dataidxs)."""

    scheme: str = "iid"
    n_parties: int = 10
    beta: float = 0.5
    classes_per_party: int = 2
    min_size: int = 10
    shards_per_party: int = 2
    max_redraws: int = 1000
    # what the label-skew schemes split by: the training labels, or the dataset's
    # superclasses (cifar100) so that each party sees some superclasses
    by: str = "label"
    # scheme flwr: a flwr-datasets partitioner class and its constructor arguments
    # (num_partitions and seed come from partition.n_parties and seed)
    flwr_partitioner: Optional[str] = None
    flwr_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """``model.*``: the network trained by every party."""

    name: str = "simple-cnn"
    projection_head: bool = False
    proj_dim: int = 256
    dropout: float = 0.0
    hidden: list[int] = field(default_factory=lambda: [200, 200])


@dataclass
class TrainConfig:
    """``train.*``: the local training of one party in one round."""

    # an int, or [lo, hi]: drawn per party per round from the seed (FedNova's setting)
    epochs: Any = 1
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    loss: str = "ce"
    focal_gamma: float = 2.0
    focal_alpha: Optional[float] = None
    amp: bool = False


@dataclass
class FederationConfig:
    """``federation.*``: rounds, sampling and tolerance of the federation."""

    rounds: int = 10
    fraction_fit: float = 1.0
    fraction_evaluate: float = 0.0
    # central evaluation every k rounds and after the last; 0 = never (benchmarks)
    eval_every: int = 1
    min_fit_clients: int = 1
    straggler_fraction: float = 0.0
    max_failure_fraction: float = 0.5
    # a round whose mean training loss is non-finite or above this multiple of round 1's,
    # or whose cohort is mostly non-finite, has diverged (0 = only non-finite counts)
    divergence_factor: float = 10.0
    # stop: end the run with status "diverged"; continue: warn, record it, train on
    on_divergence: str = "stop"


@dataclass
class EngineConfig:
    """``engine.*``: where and how clients run."""

    name: str = "local"
    device: str = "auto"
    workers: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    ray_address: Optional[str] = None
    client_timeout: Optional[float] = None
    fault_rate: float = 0.0
    # train a cohort in lockstep with torch.func.vmap: auto = on CUDA when the setup allows
    batch_clients: str = "auto"
    deterministic: bool = False
    # torch threads per client process on every engine (a Ray actor gets as many): equal
    # thread counts give bit-equal results across engines; 0 = torch's default (all cores)
    threads: int = 1


@dataclass
class EvalConfig:
    """``eval.*``: central evaluation of the global model."""

    batch_size: int = 1024
    fbeta: float = 2.0
    train_sample: int = 10000
    # client drift, update cosine, gradient diversity each round (O(K P) per round)
    model_heterogeneity: bool = True


@dataclass
class OutputConfig:
    """``output.*``: what the run directory keeps."""

    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    tensorboard: bool = False
    plots: bool = True


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
    federation: FederationConfig = field(default_factory=FederationConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


# --------------------------------------------------------------------------- keys


def _schema_keys(cls: type = ExperimentConfig, prefix: str = "") -> dict[str, Any]:
    """Every dotted key of the schema -> its dataclass field type (leaf or section)."""
    keys: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        ftype = f.type if not isinstance(f.type, str) else _SECTIONS.get(f.type, f.type)
        if isinstance(ftype, type) and dataclasses.is_dataclass(ftype):
            keys[dotted] = ftype
            keys.update(_schema_keys(ftype, dotted + "."))
        else:
            keys[dotted] = ftype
    return keys


_SECTIONS = {
    c.__name__: c
    for c in (
        DataConfig,
        PartitionConfig,
        ModelConfig,
        TrainConfig,
        StrategyParams,
        FederationConfig,
        EngineConfig,
        EvalConfig,
        OutputConfig,
    )
}


def all_keys() -> list[str]:
    """All valid dotted leaf keys, e.g. ``train.lr``; ``strategy.*`` lists every
    algorithm's hyperparameters (each is valid only with its own algorithm)."""
    schema = _schema_keys()
    keys = [k for k, t in schema.items() if not (isinstance(t, type) and dataclasses.is_dataclass(t))]
    extra = {f"strategy.{h.name}" for name in strategies.available() for h in hyperparameters(strategies.get(name).Params)}
    return keys + sorted(extra - set(keys))


def _check_known_keys(tree: Any, prefix: str = "") -> None:
    """Raise ConfigError for the first key of ``tree`` that the schema lacks
    (``strategy.*`` is checked against the chosen algorithm: :func:`_strategy_params`)."""
    schema = _schema_keys()
    if not isinstance(tree, Mapping):
        return
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if dotted not in schema:
            candidates = [k for k in schema if k.count(".") == dotted.count(".")]
            close = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            section = prefix.rstrip(".") or "the top level"
            raise ConfigError(f"unknown config key '{dotted}'{hint}; valid keys of {section}: "
                              + ", ".join(sorted(k[len(prefix):] for k in candidates if k.startswith(prefix))))
        kind = schema[dotted]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{dotted}' is a section; expected a mapping of keys, got {value!r}")
            if dotted != "strategy":
                _check_known_keys(value, dotted + ".")


def _strategy_params(*trees: Mapping[str, Any]) -> StrategyParams:
    """The chosen algorithm's params dataclass (defaults), after checking that every
    ``strategy.*`` key written in ``trees`` (later ones win) is one of its own."""
    sections = [t.get("strategy") or {} for t in trees if isinstance(t, Mapping)]
    name = "fedavg"
    for sec in sections:
        if "name" in sec:
            name = sec["name"]
    if not isinstance(name, str):
        raise ConfigError(f"config key 'strategy.name' = {name!r} must be a string; allowed: {', '.join(strategies.available())}")
    allowed = strategies.available()
    if name not in allowed:
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"config key 'strategy.name' = {name!r} is not allowed{hint}; allowed: {', '.join(allowed)}")
    params_cls = strategies.get(name).Params
    own = [h.name for h in hyperparameters(params_cls)]
    for sec in sections:
        for key in sec:
            if key != "name" and key not in own:
                close = difflib.get_close_matches(str(key), own, n=1, cutoff=0.5)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                has = ", ".join(own) if own else "none"
                raise ConfigError(f"strategy '{name}' has no parameter 'strategy.{key}'{hint}; its parameters: {has}")
    return params_cls(name=name)


# ------------------------------------------------------------------------ loading


def _parse_overrides(overrides: Iterable[str]) -> list[str]:
    items = []
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.lr=0.05)")
        items.append(item)
    return items


def _parses(item: str) -> bool:
    try:
        OmegaConf.from_dotlist([item])
    except (OmegaConfBaseException, yaml.YAMLError):
        return False
    return True


def _user_tree(source: Any) -> dict:
    """Plain dict of what the user wrote, from a path, a mapping or a config."""
    if source is None:
        return {}
    if isinstance(source, ExperimentConfig):
        return OmegaConf.to_container(OmegaConf.structured(source), resolve=False)  # type: ignore[return-value]
    if isinstance(source, (DictConfig, ListConfig)):
        return OmegaConf.to_container(source, resolve=False)  # type: ignore[return-value]
    if isinstance(source, Mapping):
        return dict(source)
    return load_yaml_mapping(Path(source), "config file")


def load_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping, unresolved; ConfigError naming ``what``."""
    if not path.exists():
        raise ConfigError(f"{what} '{path}' does not exist")
    if path.is_dir():
        raise ConfigError(f"{what} '{path}' is a directory; expected a YAML file")
    try:
        # OmegaConf's loader is yaml.SafeLoader: no arbitrary object construction
        loaded = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{what} '{path}' is not valid YAML: {first}") from exc
    except OSError as exc:  # OmegaConf's answer to a file holding a scalar (42, true)
        if "Invalid loaded object type" in str(exc):
            raise ConfigError(f"{what} '{path}' must hold a mapping of keys, got {str(exc).rsplit(': ', 1)[-1]}") from exc
        raise ConfigError(f"{what} '{path}' cannot be read: {exc.strerror or exc}") from exc
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{what} '{path}' must hold a mapping of keys, got a list")
    return OmegaConf.to_container(loaded, resolve=False)  # type: ignore[return-value]


def load_config(source: Any = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load, merge and validate a config.

    ``source`` is a YAML path, a mapping, an ExperimentConfig or None (defaults);
    ``overrides`` are dotted ``key=value`` strings applied on top.
    """
    tree = _user_tree(source)
    _check_known_keys(tree)
    over_items = _parse_overrides(overrides)
    try:
        over = OmegaConf.from_dotlist(over_items)
    except (OmegaConfBaseException, yaml.YAMLError) as exc:
        bad = next((o for o in over_items if not _parses(o)), None)
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"override '{bad}' is not valid YAML after '=' ({first}); quote or fix it, e.g. train.epochs=[1,3]"
                          if bad else f"cannot parse overrides {over_items}: {first}") from exc
    over_tree = OmegaConf.to_container(over, resolve=False)
    _check_known_keys(over_tree)
    base = OmegaConf.structured(ExperimentConfig(strategy=_strategy_params(tree, over_tree)))
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(tree), over)
        OmegaConf.resolve(merged)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe_omegaconf_error(exc)) from exc
    assert isinstance(cfg, ExperimentConfig)
    validate(cfg)
    return cfg


def _describe_omegaconf_error(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or "?"
    value = getattr(exc, "value", None)
    msg = str(exc).strip().splitlines()[0]
    if "could not be converted" in msg or "Value" in msg:
        schema = _schema_keys()
        expected = schema.get(key)
        name = getattr(expected, "__name__", None) or str(expected).replace("typing.", "")
        return f"config key '{key}': {value!r} is not a valid {name}"
    if "Interpolation" in type(exc).__name__ or "interpolation" in msg.lower():
        return f"config key '{key}': {msg}"
    return f"config key '{key}': {msg}"


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (what ``config.yaml`` in a run directory holds)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_yaml_text(text: str) -> ExperimentConfig:
    """Inverse of :func:`to_yaml`."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config text is not valid YAML: {exc}") from exc
    return load_config(tree or {})


def to_dict(cfg: ExperimentConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


#: keys that do not make a run another run (left out of its identity): where it runs
#: (the engines give the same results), what it keeps (output.*), its failure
#: tolerances (raised to resume an aborted run) and how many rounds it has (raised to
#: train a finished run on)
NOT_IDENTITY = (
    "output",
    "engine.name", "engine.device", "engine.workers", "engine.num_cpus", "engine.num_gpus", "engine.ray_address",
    "engine.threads", "engine.batch_clients", "engine.client_timeout",
    "federation.max_failure_fraction", "federation.rounds",
)


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def identity(cfg: ExperimentConfig) -> dict[str, Any]:
    """The dotted keys and values that make a run what it is (see NOT_IDENTITY)."""
    flat = _flat(to_dict(cfg))
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_IDENTITY)}


def config_hash(cfg: ExperimentConfig) -> str:
    """A stable hash of everything that changes the results of a run (:func:`identity`):
    a sweep resumed on another machine, with more workers, a higher failure tolerance
    or more rounds still recognises its runs."""
    text = yaml.safe_dump(identity(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_diff(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """``key: old -> new`` for every identity key that differs (sorted)."""
    a, b = identity(old), identity(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# --------------------------------------------------------------------- validation


def _in_range(key: str, value: float, lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' = {value!r} is not a finite number")
    ok = True
    if lo is not None:
        ok &= value > lo if lo_open else value >= lo
    if hi is not None:
        ok &= value < hi if hi_open else value <= hi
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else (str(lo) if isinstance(lo, int) else f"{lo:g}")
        hi_s = "inf" if hi is None else (str(hi) if isinstance(hi, int) else f"{hi:g}")
        raise ConfigError(f"config key '{key}' = {value!r} is out of range; allowed: {left}{lo_s}, {hi_s}{right}")


def _one_of(key: str, value: str, allowed: Iterable[str]) -> None:
    allowed = sorted(allowed)
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"config key '{key}' = {value!r} is not allowed{hint}; allowed: {', '.join(allowed)}")


CIFAR100_LABELS = ("fine", "coarse")
PARTITION_BY = ("label", "superclass")
# schemes whose split does not depend on the labels (partition.by would be ignored)
LABEL_BLIND_SCHEMES = ("iid", "quantity-skew", "natural")
# keys read by some datasets / schemes only: a value other than the default elsewhere
# would be silently ignored, so it is an error
_DATASET_KEYS = {
    "image_size": ("hf", "imagefolder"),
    "cifar100_labels": ("cifar100",),
    "hf_path": ("hf",),
    "hf_split_train": ("hf",),
    "hf_split_test": ("hf",),
    "hf_image_key": ("hf",),
    "hf_text_key": ("hf",),
    "hf_label_key": ("hf",),
    "hf_group_key": ("hf",),
}
_SCHEME_KEYS = {"flwr_partitioner": ("flwr",), "flwr_args": ("flwr",)}


def _only_where_read(section: Any, prefix: str, chosen: str, chooser: str, keys: Mapping[str, Sequence[str]]) -> None:
    """ConfigError for a key set away from its default where ``chosen`` does not read it."""
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
                for f in dataclasses.fields(section)}
    for key, readers in keys.items():
        if chosen not in readers and getattr(section, key) != defaults[key]:
            raise ConfigError(f"config key '{prefix}.{key}' is read only with {chooser} {' or '.join(readers)}, "
                              f"not {chosen!r}: remove it")


OPTIMIZERS = ("sgd", "adam", "adamw")
LOSSES = ("ce", "focal")
ENGINES = ("local", "ray")
BATCH_CLIENTS = ("auto", "on", "off")
DIVERGENCE_ACTIONS = ("stop", "continue")
MAX_SEED = 2**63 - 1


def epoch_range(epochs: Any) -> tuple[int, int]:
    """``train.epochs`` as (lo, hi): an int n is (n, n)."""
    if isinstance(epochs, bool):
        raise ConfigError(f"config key 'train.epochs' = {epochs!r} must be an int >= 1 or a range [lo, hi]")
    if isinstance(epochs, int):
        return epochs, epochs
    if isinstance(epochs, (list, tuple, ListConfig)) and len(epochs) == 2 and all(
        isinstance(e, int) and not isinstance(e, bool) for e in epochs
    ):
        return int(epochs[0]), int(epochs[1])
    raise ConfigError(f"config key 'train.epochs' = {epochs!r} must be an int >= 1 or a range [lo, hi] of ints")


def validate(cfg: ExperimentConfig) -> None:
    """Check every value against its allowed set or range; raise ConfigError."""
    # registries are imported here: config is imported by them at module level
    from . import data as data_registry
    from . import models as model_registry
    import partitioners

    # seeds are stored as int64 (dataidxs.npz) and hashed with the purpose of each draw
    _in_range("seed", cfg.seed, 0, MAX_SEED)
    d = cfg.data
    _one_of("data.dataset", d.dataset, data_registry.available())
    _in_range("data.seed", d.seed, 0, MAX_SEED)
    _in_range("data.val_fraction", d.val_fraction, 0.0, 1.0, hi_open=True)
    _in_range("data.feature_noise", d.feature_noise, 0.0, None)
    _in_range("data.n_train", d.n_train, 1, None)
    _in_range("data.n_test", d.n_test, 1, None)
    _in_range("data.num_classes", d.num_classes, 2, None)
    _in_range("data.noise", d.noise, 0.0, None)
    _in_range("data.synthetic_alpha", d.synthetic_alpha, 0.0, None)
    _in_range("data.synthetic_beta", d.synthetic_beta, 0.0, None)
    _in_range("data.num_groups", d.num_groups, 0, None)
    if len(d.image_shape) != 3 or any(s < 1 for s in d.image_shape):
        raise ConfigError(f"config key 'data.image_shape' = {list(d.image_shape)} must be [channels, height, width], each >= 1")
    _in_range("data.cv_folds", d.cv_folds, 0, None)
    if d.cv_folds == 1:
        raise ConfigError("config key 'data.cv_folds' = 1 is not allowed; use 0 (no cross-validation) or K >= 2")
    if d.cv_folds >= 2:
        _in_range("data.cv_fold", d.cv_fold, 0, d.cv_folds - 1)
    if d.image_shape[1] < 8 or d.image_shape[2] < 8:
        raise ConfigError(f"config key 'data.image_shape' = {list(d.image_shape)}: height and width must be >= 8")
    _in_range("data.image_size", d.image_size, 0, None)
    _one_of("data.cifar100_labels", d.cifar100_labels, CIFAR100_LABELS)
    _only_where_read(d, "data", d.dataset, "data.dataset", _DATASET_KEYS)
    if d.dataset == "hf" and not d.hf_path:
        raise ConfigError("data.dataset 'hf' needs data.hf_path: a directory written by save_to_disk, a directory "
                          "of parquet/arrow files, or a Hub name in the local cache")
    text = data_registry.is_text(d)
    if text and d.feature_noise > 0:
        raise ConfigError(f"config key 'data.feature_noise' > 0 needs real-valued inputs; '{d.dataset}' gives "
                          "token sequences")
    if text and d.augment:
        raise ConfigError(f"config key 'data.augment' = true needs images; '{d.dataset}' gives token sequences")

    p = cfg.partition
    _one_of("partition.scheme", p.scheme, partitioners.available())
    _in_range("partition.n_parties", p.n_parties, 1, None)
    _in_range("partition.beta", p.beta, 0.0, None, lo_open=True)
    _in_range("partition.classes_per_party", p.classes_per_party, 1, None)
    _in_range("partition.min_size", p.min_size, 0, None)
    _in_range("partition.shards_per_party", p.shards_per_party, 1, None)
    _in_range("partition.max_redraws", p.max_redraws, 1, None)
    _one_of("partition.by", p.by, PARTITION_BY)
    if p.by != "label" and p.scheme in LABEL_BLIND_SCHEMES:
        raise ConfigError(f"config key 'partition.by' = {p.by!r} changes only the label-skew schemes; "
                          f"partition.scheme {p.scheme!r} does not read labels: remove it")
    _only_where_read(p, "partition", p.scheme, "partition.scheme", _SCHEME_KEYS)
    if p.scheme == "flwr" and not p.flwr_partitioner:
        raise ConfigError("partition.scheme 'flwr' needs partition.flwr_partitioner: a flwr-datasets partitioner "
                          "class, e.g. DirichletPartitioner, PathologicalPartitioner, ShardPartitioner")

    m = cfg.model
    _one_of("model.name", m.name, model_registry.available())
    _in_range("model.proj_dim", m.proj_dim, 1, None)
    _in_range("model.dropout", m.dropout, 0.0, 1.0, hi_open=True)
    if any(h < 1 for h in m.hidden):
        raise ConfigError(f"config key 'model.hidden' = {list(m.hidden)}: every layer width must be >= 1")
    tokens = model_registry.takes_tokens(m.name)
    if text and not tokens:
        raise ConfigError(f"model.name {m.name!r} needs real-valued inputs; data.dataset {d.dataset!r} gives token "
                          f"sequences: use a sequence model ({', '.join(model_registry.token_models())})")
    if tokens and not text:
        raise ConfigError(f"model.name {m.name!r} reads token sequences; data.dataset {d.dataset!r} is not text: use "
                          "leaf-shakespeare, or hf with data.hf_text_key")

    t = cfg.train
    lo, hi = epoch_range(t.epochs)
    if lo < 1 or hi < lo:
        raise ConfigError(f"config key 'train.epochs' = {t.epochs!r}: need 1 <= lo <= hi")
    _in_range("train.batch_size", t.batch_size, 1, None)
    _in_range("train.lr", t.lr, 0.0, None, lo_open=True)
    _in_range("train.momentum", t.momentum, 0.0, 1.0, hi_open=True)
    _in_range("train.weight_decay", t.weight_decay, 0.0, None)
    _one_of("train.optimizer", t.optimizer, OPTIMIZERS)
    _one_of("train.loss", t.loss, LOSSES)
    _in_range("train.focal_gamma", t.focal_gamma, 0.0, None)
    if t.focal_alpha is not None:
        _in_range("train.focal_alpha", t.focal_alpha, 0.0, 1.0)

    s = cfg.strategy
    _one_of("strategy.name", s.name, strategies.available())
    problem = out_of_range(s) or strategies.get(s.name).check(cfg)
    if problem:
        raise ConfigError(problem)

    f = cfg.federation
    _in_range("federation.rounds", f.rounds, 1, None)
    _in_range("federation.fraction_fit", f.fraction_fit, 0.0, 1.0, lo_open=True)
    _in_range("federation.fraction_evaluate", f.fraction_evaluate, 0.0, 1.0)
    _in_range("federation.eval_every", f.eval_every, 0, None)
    _in_range("federation.min_fit_clients", f.min_fit_clients, 1, None)
    _in_range("federation.straggler_fraction", f.straggler_fraction, 0.0, 1.0)
    _in_range("federation.max_failure_fraction", f.max_failure_fraction, 0.0, 1.0)
    _in_range("federation.divergence_factor", f.divergence_factor, 0.0, None)
    _one_of("federation.on_divergence", f.on_divergence, DIVERGENCE_ACTIONS)
    if f.fraction_evaluate > 0 and d.val_fraction == 0:
        raise ConfigError(
            "config key 'federation.fraction_evaluate' > 0 needs local validation data: set data.val_fraction in (0, 1)"
        )

    e = cfg.engine
    _one_of("engine.name", e.name, ENGINES)
    dev = e.device
    if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"config key 'engine.device' = {dev!r} is not allowed; allowed: auto, cpu, cuda, cuda:N, mps")
    _in_range("engine.workers", e.workers, 1, None)
    _in_range("engine.num_cpus", e.num_cpus, 0.0, None, lo_open=True)
    _in_range("engine.num_gpus", e.num_gpus, 0.0, None)
    if e.client_timeout is not None:
        _in_range("engine.client_timeout", e.client_timeout, 0.0, None, lo_open=True)
    _in_range("engine.fault_rate", e.fault_rate, 0.0, 1.0, hi_open=True)
    # YAML 1.1 (and so OmegaConf's override parser) reads a bare on/off as a boolean,
    # which the str field then holds as "True"/"False"
    e.batch_clients = {"True": "on", "False": "off"}.get(e.batch_clients, e.batch_clients)
    _one_of("engine.batch_clients", e.batch_clients, BATCH_CLIENTS)
    if e.batch_clients == "on" and e.workers > 1:
        raise ConfigError("config keys 'engine.batch_clients' = on and 'engine.workers' > 1 exclude each other: batching runs a cohort in one process")
    _in_range("engine.threads", e.threads, 0, None)

    _in_range("eval.batch_size", cfg.eval.batch_size, 1, None)
    _in_range("eval.fbeta", cfg.eval.fbeta, 0.0, None, lo_open=True)
    _in_range("eval.train_sample", cfg.eval.train_sample, 0, None)
    _in_range("output.checkpoint_every", cfg.output.checkpoint_every, 0, None)
    _in_range("output.keep_checkpoints", cfg.output.keep_checkpoints, 1, None)


def partition_params(cfg: ExperimentConfig) -> dict[str, Any]:
    """The ``partition.*`` values that the chosen scheme takes, by name."""
    import partitioners

    wanted = partitioners.scheme_params(cfg.partition.scheme)
    values = dataclasses.asdict(cfg.partition)
    return {k: values[k] for k in wanted if k in values}
