"""Registry of partition schemes: a name -> a :class:`Scheme` plug-in, ``labels -> dataidxs``.

A scheme is a function ``fn(labels, n_parties, rng, **params) -> dict[int, np.ndarray]``
taking the validated int64 ``labels`` (1-D, >= 0), the number of parties
(``1 <= n_parties <= len(labels)``) and a ``numpy.random.Generator`` from which it draws
every random number; its keyword parameters are what the config layer passes as
``partition.<name>``. Adding a scheme is one file in this package (found on first use:
no import line anywhere) with ``@register("name", summary=..., paper=...)``; a scheme
with keys of its own declares them in ``Params``, a subclass of
:class:`fedsim.schema.sections.PartitionConfig` whose fields are declared with
:func:`fedsim.util.params.hp` (their defaults fill in keywords the caller leaves out).

This module builds on fedsim's plug-in mechanism (:mod:`fedsim.util.plugins`, the
standard library only); ``partitioners`` imports it on first use, so that ``import
partitioners`` stays numpy-only.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedsim.schema.sections import PartitionConfig
from fedsim.util.params import hyperparameters
from fedsim.util.plugins import Plugin, Registry, close_match

from ._validate import as_int, check_labels
from .io import FlatPartition

SchemeFn = Callable[..., dict[int, np.ndarray]]
CheckFn = Callable[[Any], "str | None"]

# the leading positional arguments every scheme takes; its parameters come after them
_FIXED_ARGS = ("labels", "n_parties", "rng")


class Scheme(Plugin):
    """One partition scheme: the function and what it promises."""

    Params: type = PartitionConfig

    def __init__(self, name: str, fn: SchemeFn, *, sorted_output: bool, takes_seed: bool, uses_labels: bool,
                 check: CheckFn | None, summary: str, paper: str, Params: type) -> None:  # fmt: skip
        self.name, self.fn, self.summary, self.paper, self.Params = name, fn, summary, paper, Params
        self._check = check
        #: every returned array is int64 and sorted ascending (partition() skips its check)
        self.sorted_output = sorted_output
        #: gets the integer ``seed=`` keyword too (a library that seeds its own generator)
        self.takes_seed = takes_seed
        #: splits by the labels (partition.by chooses them), unlike iid or quantity skew
        self.uses_labels = uses_labels
        params = list(inspect.signature(fn).parameters.values())
        if [p.name for p in params[: len(_FIXED_ARGS)]] != list(_FIXED_ARGS):
            raise TypeError(f"partition scheme {name!r}: signature must start with {', '.join(_FIXED_ARGS)}")
        kw = [p for p in params[len(_FIXED_ARGS) :] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if takes_seed:
            if "seed" not in [p.name for p in kw]:
                raise TypeError(f"partition scheme {name!r}: takes_seed=True needs a 'seed' keyword parameter")
            kw = [p for p in kw if p.name != "seed"]
        #: the keyword parameters it accepts, in signature order
        self.accepted = [p.name for p in kw]
        # a keyword of its own without a default takes the one its Params declare
        common = {f.name for f in dataclasses.fields(PartitionConfig)}
        self.defaults = {h.name: h.default for h in hyperparameters(Params) if h.name in self.accepted}
        self.defaults = {k: v for k, v in self.defaults.items() if k not in common}
        self.required = [p.name for p in kw if p.default is inspect.Parameter.empty and p.name not in self.defaults]
        #: the common partition.* keys among its parameters (listings); its own are in Params
        own = {h.name for h in hyperparameters(Params)}
        self.reads = tuple(k for k in self.accepted if k in common and k not in own)

    def check(self, cfg: Any) -> str | None:
        return self._check(cfg) if self._check is not None else None


#: the partition schemes: the modules of partitioners/ (sorted by name)
SCHEMES: Registry[Scheme] = Registry("partition scheme", "partitioners", section="partition", chooser="scheme",
                                     base=PartitionConfig)  # fmt: skip


def register(
    name: str,
    *,
    sorted_output: bool = False,
    takes_seed: bool = False,
    uses_labels: bool = True,
    check: CheckFn | None = None,
    summary: str = "",
    paper: str = "",
    Params: type = PartitionConfig,
) -> Callable[[SchemeFn], SchemeFn]:
    """Decorator: add ``fn`` to the registry under ``name``.

    ``sorted_output=True`` promises that every returned array is int64 and sorted
    ascending; otherwise :func:`partition` converts and sorts them.
    ``takes_seed=True``: the scheme also gets the integer ``seed=`` keyword (for a
    library that seeds its own generator, such as flwr-datasets); it is not one of the
    scheme's parameters. ``uses_labels=False``: the split ignores the labels
    (``partition.by`` is then refused). ``check(cfg)``: why a config cannot use it;
    ``Params``: its ``partition.*`` dataclass.
    """

    def deco(fn: SchemeFn) -> SchemeFn:
        scheme = Scheme(name, fn, sorted_output=sorted_output, takes_seed=takes_seed, uses_labels=uses_labels,
                        check=check, summary=summary, paper=paper, Params=Params)  # fmt: skip
        SCHEMES.add(scheme, fn.__module__)
        return fn

    return deco


def unregister(name: str) -> None:
    """Remove a scheme (tests that register their own)."""
    SCHEMES.unregister(name)


def available() -> list[str]:
    """The registered scheme names, sorted."""
    return SCHEMES.available()


def _scheme(scheme: str) -> Scheme:
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        names = available()
        raise ValueError(
            f"partition.scheme must be one of {', '.join(names)}; got {scheme!r}{close_match(scheme, names)}"
        )
    return SCHEMES.get(scheme)


def get_scheme(scheme: str) -> SchemeFn:
    """The scheme function registered as ``scheme``; ValueError naming the allowed ones."""
    return _scheme(scheme).fn


def scheme_params(scheme: str) -> list[str]:
    """The parameter names ``scheme`` accepts, in signature order.

    e.g. ``scheme_params("dirichlet") == ["beta", "min_size", "max_redraws"]``.
    """
    return list(_scheme(scheme).accepted)


def partition_params(cfg: Any) -> dict[str, Any]:
    """The ``partition.*`` values of a run's config that its scheme takes, by name."""
    wanted = scheme_params(cfg.partition.scheme)
    values = dataclasses.asdict(cfg.partition)
    return {k: values[k] for k in wanted if k in values}


def required_params(scheme: str) -> list[str]:
    """The parameters of ``scheme`` that have no default."""
    return list(_scheme(scheme).required)


def takes_seed(scheme: str) -> bool:
    """Whether ``scheme`` was registered with ``takes_seed=True``."""
    return _scheme(scheme).takes_seed


def promises_sorted(scheme: str) -> bool:
    """Whether ``scheme`` was registered with ``sorted_output=True``."""
    return _scheme(scheme).sorted_output


def partition(labels: Any, scheme: str, n_parties: int, seed: int = 0, **params: Any) -> Mapping[int, np.ndarray]:
    """Split the samples of ``labels`` among ``n_parties`` parties with ``scheme``.

    ``labels``: 1-D non-negative integer class ids. ``params``: the scheme's parameters
    (``scheme_params(scheme)``). All randomness comes from
    ``np.random.default_rng(seed)``: the same inputs and seed give the same split.
    Returns ``{0: idx_0, ..., n-1: idx_{n-1}}`` (a dict, or a :class:`FlatPartition` of
    views into one array), int64 arrays sorted ascending (a party
    may be empty only where the scheme allows it, e.g. ``min_size=0``).
    Raises ValueError (one line, naming the parameter) on bad input.
    """
    plugin = _scheme(scheme)
    labels = check_labels(labels)
    n_parties = as_int("partition.n_parties", n_parties, 1, labels.size, why=f" (at most the {labels.size} samples)")
    seed = as_int("seed", seed, 0)
    unknown = sorted(set(params) - set(plugin.accepted))
    if unknown:
        raise ValueError(
            f"partition scheme {scheme!r} does not take {', '.join('partition.' + u for u in unknown)}; "
            f"it accepts: {', '.join(plugin.accepted) or 'no parameters'}"
        )
    missing = [p for p in plugin.required if p not in params]
    if missing:
        raise ValueError(f"partition scheme {scheme!r} needs {', '.join('partition.' + m for m in missing)}")
    params = {**{k: v for k, v in plugin.defaults.items() if k not in params}, **params}
    if plugin.takes_seed:
        params = {**params, "seed": seed}
    out = plugin.fn(labels, n_parties, np.random.default_rng(seed), **params)
    if plugin.sorted_output and isinstance(out, FlatPartition) and len(out) == n_parties:
        return out  # parties 0..n-1 by construction
    parties = list(range(n_parties))
    in_order = list(out) == parties
    if not in_order and sorted(out) != parties:
        raise RuntimeError(f"partition scheme {scheme!r} returned party ids other than 0..{n_parties - 1}")
    if plugin.sorted_output:
        return out if in_order else {j: out[j] for j in parties}
    return {j: np.sort(np.asarray(out[j]).astype(np.int64).reshape(-1)) for j in range(n_parties)}
