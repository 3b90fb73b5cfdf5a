"""A tune file and its plan: the search space, the sampler, the pruner, the selection.

A tune file (YAML, safe-loaded) holds::

    name: mnist-fedprox                 # optional; default: the file's stem
    base: ../mnist-t10k.yaml            # experiment YAML, relative to the tune file
    overrides: [federation.rounds=10, data.val_fraction=0.2, federation.fraction_evaluate=1.0]
    space:                              # dotted config key -> Optuna distribution
      train.lr: {type: float, low: 0.001, high: 0.3, log: true}
      strategy.mu: {type: categorical, choices: [0.001, 0.01, 0.1]}
      train.epochs: {type: int, low: 1, high: 5}
    n_trials: 20
    seed: 0                             # the sampler's seed
    sampler: tpe                        # tpe (default) or random; or {type: tpe, n_startup_trials: 5}
    pruner: median                      # median (default), hyperband or none; or {type: median, ...}
    seeds: [0, 1, 2]                    # the chosen setting's final runs (default: the config's seed)
    select_by: val_accuracy             # a validation metric (val_loss is minimised)
    folds: 0                            # K >= 2: K-fold cross-validation instead of local validation

Every space key must be a config key; every corner of the space (each range's ends,
each choice) is composed and validated before anything runs, so a trial never fails on
a value the file allowed. The bad inputs of the issue (an unknown key, an empty range,
a log range reaching 0) are one-line ConfigErrors.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from fedsim.config.load import all_keys
from fedsim.errors import ConfigError
from fedsim.schema.experiment import ExperimentConfig
from fedsim.sweeps import SweepSpec, compose
from fedsim.sweeps.spec import check_seeds, check_spec_keys, load_base, read_spec_source, spec_name

log = logging.getLogger(__name__)

TUNE_KEYS = (
    "name",
    "base",
    "overrides",
    "space",
    "n_trials",
    "seed",
    "sampler",
    "pruner",
    "seeds",
    "select_by",
    "folds",
)
PARAM_KEYS = {
    "float": ("type", "low", "high", "log", "step"),
    "int": ("type", "low", "high", "log", "step"),
    "categorical": ("type", "choices"),
}
#: sampler and pruner names -> Optuna's classes (their defaults are Optuna's)
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler"}
PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "none": "NopPruner"}
#: at most this many corners of the space are composed and validated (then one key at a time)
MAX_CORNERS = 256


@dataclass(frozen=True)
class SpaceParam:
    """One searched key: an Optuna float, int or categorical distribution."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def corners(self) -> list[Any]:
        """The values whose configs are validated before the study starts."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def distribution(self):
        """The Optuna distribution (Optuna imported here: it is the ``tune`` extra)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "float":
            return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return CategoricalDistribution(list(self.choices))

    def describe(self) -> str:
        if self.type == "categorical":
            return f"categorical {list(self.choices)}"
        extra = " log" if self.log else (f" step {self.step:g}" if self.step else "")
        return f"{self.type} [{self.low:g}, {self.high:g}]{extra}"


@dataclass
class TuneSpec:
    """A parsed tune file."""

    name: str
    base: dict
    overrides: list[str]
    space: list[SpaceParam]
    n_trials: int
    seed: int = 0
    sampler: tuple[str, dict] = ("tpe", {})
    pruner: tuple[str, dict] = ("median", {})
    seeds: list[int] | None = None
    select_by: str = "val_accuracy"
    folds: int = 0
    source: str | None = None

    @property
    def minimize(self) -> bool:
        return "loss" in self.select_by

    def identity(self) -> dict:
        """What a resume must share with the study it continues (``n_trials`` and the
        final ``seeds`` may change)."""
        return {
            "name": self.name,  # the study's name in study.db
            "base": self.base,
            "overrides": self.overrides,
            "space": [asdict(p) | {"choices": list(p.choices)} for p in self.space],
            "seed": self.seed,
            "sampler": list(self.sampler),
            "pruner": list(self.pruner),
            "select_by": self.select_by,
            "folds": self.folds,
        }

    def as_sweep(self) -> SweepSpec:
        """The base and overrides as a sweep spec, to compose configs the sweep's way."""
        return SweepSpec(self.name, self.base, self.overrides, [], None, [], self.source)


def _int(value: Any, what: str, lo: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ConfigError(f"tune key '{what}' must be an integer >= {lo}, got {value!r}")
    return value


def _number(value: Any, what: str) -> float | int:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"tune '{what}' must be a number, got {value!r}")
    return value


def _parse_param(key: Any, raw: Any, overrides: list[str]) -> SpaceParam:
    """One entry of ``space``: a config key and its range (float, int) or choices."""
    _check_space_key(key, overrides)
    if not isinstance(raw, Mapping) or "type" not in raw:
        raise ConfigError(
            f"tune 'space.{key}' must be a mapping with a type: {{type: float, low: .., high: ..}}, "
            f"{{type: int, low: .., high: ..}} or {{type: categorical, choices: [..]}}; got {raw!r}"
        )
    kind = raw["type"]
    if kind not in PARAM_KEYS:
        raise ConfigError(f"tune 'space.{key}': type {kind!r} is not allowed; allowed: {', '.join(PARAM_KEYS)}")
    unknown = [k for k in raw if k not in PARAM_KEYS[kind]]
    if unknown:
        raise ConfigError(
            f"tune 'space.{key}': '{unknown[0]}' is not a key of a {kind} range; allowed: {', '.join(PARAM_KEYS[kind])}"
        )
    if kind == "categorical":
        return _categorical(key, raw.get("choices"))
    return _range(key, kind, raw)


def _check_space_key(key: Any, overrides: list[str]) -> None:
    """A key of ``space``: a config key, not the seed, not fixed in ``overrides`` as well."""
    if not isinstance(key, str) or not key:
        raise ConfigError(f"tune 'space': key {key!r} must be a dotted config key such as train.lr")
    keys = all_keys()
    if key == "seed":
        raise ConfigError("tune 'space': 'seed' is not a hyperparameter; list the final runs' seeds under 'seeds'")
    if key not in keys:
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"tune 'space': unknown config key '{key}'{hint}")
    if any(o.split("=", 1)[0].strip() == key for o in overrides):
        raise ConfigError(f"tune 'space.{key}' is also set in 'overrides'; search it or fix it, not both")


def _categorical(key: str, choices: Any) -> SpaceParam:
    """``{type: categorical, choices: [...]}``: distinct scalars."""
    where = f"space.{key}"
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"tune '{where}': choices must be a non-empty list, got {choices!r}")
    if any(isinstance(c, (list, dict, Mapping)) for c in choices):
        raise ConfigError(f"tune '{where}': choices must be scalars (numbers, strings, booleans, null)")
    if len({repr(c) for c in choices}) != len(choices):
        raise ConfigError(f"tune '{where}': choices {choices} list a value twice")
    return SpaceParam(key, "categorical", choices=tuple(choices))


def _range(key: str, kind: str, raw: Mapping[str, Any]) -> SpaceParam:
    """``{type: float|int, low, high, log?, step?}``: a non-empty range, integers for an
    int range, low > 0 on a log scale, a step (not with log) that fits in it."""
    where = f"space.{key}"
    for k in ("low", "high"):
        if k not in raw:
            raise ConfigError(f"tune '{where}': a {kind} range needs '{k}'")
    low, high = _number(raw["low"], f"{where}.low"), _number(raw["high"], f"{where}.high")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"tune '{where}.log' must be true or false, got {log!r}")
    step = raw.get("step")
    if kind == "int":
        for k, v in (("low", low), ("high", high), ("step", step)):
            if v is not None and not isinstance(v, int):
                raise ConfigError(f"tune '{where}.{k}' must be an integer for an int range, got {v!r}")
    if low >= high:
        raise ConfigError(
            f"tune '{where}': the range [{low}, {high}] is empty or a single value; need low < high "
            "(a fixed value belongs in 'overrides')"
        )
    if log and low <= 0:
        raise ConfigError(f"tune '{where}': a log range needs low > 0, got low = {low}")
    if step is not None:
        _number(step, f"{where}.step")
        if step <= 0:
            raise ConfigError(f"tune '{where}.step' must be > 0, got {step!r}")
        if log:
            raise ConfigError(f"tune '{where}': step and log exclude each other (Optuna's rule)")
        high = _stepped_high(low, high, step, where)
    return SpaceParam(key, kind, low, high, log, step)


def _stepped_high(low: float, high: float, step: float, where: str) -> float:
    """The largest low + k step <= high: what Optuna draws up to (it lowers ``high`` with a
    two-line warning of its own). A step wider than the range leaves only ``low``
    (Optuna turned [1, 2] step 5 into [1, 1]): refused; a range that is not a whole
    number of steps is lowered with one warning that says so."""
    # exact decimal arithmetic, as Optuna's own adjustment: 0.1 + 3 x 0.1 must be 0.4
    lo, hi, st = Decimal(str(low)), Decimal(str(high)), Decimal(str(step))
    k = (hi - lo) // st
    if k < 1:
        raise ConfigError(
            f"tune '{where}': step {step:g} is wider than the range [{low:g}, {high:g}], which leaves only {low:g}; "
            "use a smaller step or a wider range (a fixed value belongs in 'overrides')"
        )
    top = lo + k * st
    if top == hi:
        return high
    adjusted = int(top) if isinstance(high, int) and isinstance(step, int) else float(top)
    log.warning(
        "tune '%s': [%g, %g] is not a whole number of steps of %g from low: values are drawn from [%g, %g]",
        where,
        low,
        high,
        step,
        low,
        adjusted,
    )
    return adjusted


def _parse_choice(raw: Any, what: str, table: Mapping[str, str]) -> tuple[str, dict]:
    """``tpe`` or ``{type: tpe, n_startup_trials: 5}``; the keyword names are checked
    against the Optuna class's constructor."""
    if raw is None:
        raw = next(iter(table))
    if isinstance(raw, str):
        name, kwargs = raw, {}
    elif isinstance(raw, Mapping) and "type" in raw:
        name, kwargs = raw["type"], {k: v for k, v in raw.items() if k != "type"}
    else:
        raise ConfigError(f"tune key '{what}' must be a name ({', '.join(table)}) or {{type: NAME, ...}}, got {raw!r}")
    if name not in table:
        raise ConfigError(f"tune key '{what}' = {name!r} is not allowed; allowed: {', '.join(table)}")
    import optuna

    cls = getattr(optuna.samplers if what == "sampler" else optuna.pruners, table[name])
    allowed = [p for p in inspect.signature(cls).parameters if p not in ("self", "seed")]
    for k in kwargs:
        if k not in allowed:
            raise ConfigError(
                f"tune key '{what}': {table[name]} has no argument '{k}'; its arguments: {', '.join(allowed) or 'none'}"
            )
    return str(name), dict(kwargs)


def parse_tune(source: str | os.PathLike | Mapping[str, Any]) -> TuneSpec:
    """Read and check a tune file or mapping (not yet the configs it composes)."""
    raw, origin, default_name, src = read_spec_source(source, "tune")
    check_spec_keys(raw, TUNE_KEYS, "tune")
    base = load_base(raw, origin, "tune", "trial")
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise ConfigError(f"tune key 'overrides' must be a list of key=value strings, got {overrides!r}")
    space_raw = raw.get("space")
    if not isinstance(space_raw, Mapping) or not space_raw:
        raise ConfigError("tune key 'space' must map dotted config keys to ranges, e.g. train.lr: {type: float, ...}")
    space = [_parse_param(k, v, overrides) for k, v in space_raw.items()]
    if "n_trials" not in raw:
        raise ConfigError("tune key 'n_trials' is missing: how many settings to try")
    n_trials = _int(raw["n_trials"], "n_trials", 1)
    seed = _int(raw.get("seed", 0), "seed", 0)
    seeds = raw.get("seeds")
    check_seeds(seeds, "tune")
    select_by, folds = _parse_selection(raw)
    return TuneSpec(
        name=spec_name(raw, default_name, "tune"),
        base=base,
        overrides=list(overrides),
        space=space,
        n_trials=n_trials,
        seed=seed,
        sampler=_parse_choice(raw.get("sampler"), "sampler", SAMPLERS),
        pruner=_parse_choice(raw.get("pruner"), "pruner", PRUNERS),
        seeds=list(seeds) if seeds is not None else None,
        select_by=select_by,
        folds=folds,
        source=src,
    )


def _parse_selection(raw: Mapping[str, Any]) -> tuple[str, int]:
    """(``select_by``, ``folds``): a validation metric, and 0 (the parties' validation
    data) or K >= 2 folds (then accuracy or loss of the held-out fold)."""
    select_by = raw.get("select_by", "val_accuracy")
    if not isinstance(select_by, str) or not select_by.startswith("val_"):
        raise ConfigError(
            f"tune key 'select_by' = {select_by!r} is not a validation metric; choose one such as val_accuracy "
            "(tuning on a test or training metric is not honest model selection)"
        )
    folds = raw.get("folds", 0)
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 0 or folds == 1:
        raise ConfigError(f"tune key 'folds' must be 0 (local validation) or an integer K >= 2, got {folds!r}")
    if folds and select_by not in ("val_accuracy", "val_loss"):
        raise ConfigError(f"tune key 'select_by' = {select_by!r}: with folds, choose val_accuracy or val_loss")
    return select_by, folds


# ---------------------------------------------------------------------- plan


def trial_values(spec: TuneSpec, params: Mapping[str, Any], fold: int | None = None) -> dict[str, Any]:
    """What a trial sets over base and overrides: its parameters, and what keeps the test
    set out of tuning: with local validation no central evaluation at all
    (``federation.eval_every=0``), with K-fold the held-out fold as evaluation set."""
    values = dict(params)
    if spec.folds:
        values.update({"data.cv_folds": spec.folds, "data.cv_fold": fold or 0})
    else:
        values["federation.eval_every"] = 0
    return values


def trial_config(spec: TuneSpec, params: Mapping[str, Any], fold: int | None = None) -> ExperimentConfig:
    return compose(spec.as_sweep(), trial_values(spec, params, fold), None, "tune trial")


def final_overrides(spec: TuneSpec, rounds: int) -> list[str]:
    """The chosen setting on all the training data, tested once after its last round."""
    if spec.folds:
        data = ["data.cv_folds=0", "data.cv_fold=0"]
    else:
        data = ["data.val_fraction=0.0", "federation.fraction_evaluate=0.0"]
    return [*data, f"federation.eval_every={rounds}"]


def check_space(spec: TuneSpec) -> ExperimentConfig:
    """Compose and validate the corners of the space (every key at each end or choice,
    all combinations up to :data:`MAX_CORNERS`); returns the config of the first corner.
    With local validation, the trials must have it."""
    corners = [p.corners() for p in spec.space]
    n = 1
    for c in corners:
        n *= len(c)
    if n <= MAX_CORNERS:
        combos = [dict(zip([p.key for p in spec.space], values)) for values in itertools.product(*corners)]
    else:
        first = {p.key: c[0] for p, c in zip(spec.space, corners)}
        combos = [first] + [{**first, p.key: v} for p, c in zip(spec.space, corners) for v in c[1:]]
    cfgs = []
    for combo in combos:
        where = "tune space corner " + ", ".join(f"{k}={v}" for k, v in combo.items())
        cfgs.append(compose(spec.as_sweep(), trial_values(spec, combo, 0), None, where))
    cfg = cfgs[0]
    if not spec.folds and (cfg.data.val_fraction <= 0 or cfg.federation.fraction_evaluate <= 0):
        raise ConfigError(
            f"tune by {spec.select_by} needs local validation: add data.val_fraction=0.2 and "
            "federation.fraction_evaluate=1.0 (for example) to the tune's overrides, or set folds: K"
        )
    return cfg
