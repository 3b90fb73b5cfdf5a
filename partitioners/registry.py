"""Registry of partition schemes: a name -> a function ``labels -> dataidxs``.

A scheme is a function ``fn(labels, n_parties, rng, **params) -> dict[int, np.ndarray]``
taking the validated int64 ``labels`` (1-D, >= 0), the number of parties
(``1 <= n_parties <= len(labels)``) and a ``numpy.random.Generator`` from which it draws
every random number; its keyword parameters (with their defaults) are what the config
layer may pass as ``partition.<name>``. Adding a scheme is one file with
``@register("name")`` and one import line in ``partitioners/__init__.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

SchemeFn = Callable[..., dict[int, np.ndarray]]

_SCHEMES: dict[str, SchemeFn] = {}
_PARAMS: dict[str, tuple[list[str], list[str]]] = {}  # name -> (accepted, required), from the signature
_SORTED: set[str] = set()  # schemes that promise sorted index arrays (partition() skips its check)
_SEEDED: set[str] = set()  # schemes that take the integer seed itself (a library that seeds its own rng)

# the leading positional arguments every scheme takes; its parameters come after them
_FIXED_ARGS = ("labels", "n_parties", "rng")


def register(name: str, *, sorted_output: bool = False, takes_seed: bool = False) -> Callable[[SchemeFn], SchemeFn]:
    """Decorator: add ``fn`` to the registry under ``name`` (re-registering replaces it).

    ``sorted_output=True`` promises that every returned array is int64 and sorted
    ascending; otherwise :func:`partitioners.partition` converts and sorts them.
    ``takes_seed=True``: the scheme also gets the integer ``seed=`` keyword (for a
    library that seeds its own generator, such as flwr-datasets); it is not one of the
    scheme's parameters.
    """

    def deco(fn: SchemeFn) -> SchemeFn:
        params = list(inspect.signature(fn).parameters.values())
        if [p.name for p in params[: len(_FIXED_ARGS)]] != list(_FIXED_ARGS):
            raise TypeError(f"partition scheme {name!r}: signature must start with {', '.join(_FIXED_ARGS)}")
        kw = [p for p in params[len(_FIXED_ARGS) :] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if takes_seed:
            if "seed" not in [p.name for p in kw]:
                raise TypeError(f"partition scheme {name!r}: takes_seed=True needs a 'seed' keyword parameter")
            kw = [p for p in kw if p.name != "seed"]
            _SEEDED.add(name)
        else:
            _SEEDED.discard(name)
        _SCHEMES[name] = fn
        _PARAMS[name] = ([p.name for p in kw], [p.name for p in kw if p.default is inspect.Parameter.empty])
        if sorted_output:
            _SORTED.add(name)
        else:
            _SORTED.discard(name)
        return fn

    return deco


def available() -> list[str]:
    """The registered scheme names, sorted."""
    return sorted(_SCHEMES)


def get_scheme(scheme: str) -> SchemeFn:
    """The scheme function registered as ``scheme``; ValueError naming the allowed ones."""
    try:
        return _SCHEMES[scheme]
    except (KeyError, TypeError):
        raise ValueError(f"partition.scheme must be one of {', '.join(available())}; got {scheme!r}") from None


def scheme_params(scheme: str) -> list[str]:
    """The parameter names ``scheme`` accepts, in signature order.

    e.g. ``scheme_params("dirichlet") == ["beta", "min_size", "max_redraws"]``.
    """
    get_scheme(scheme)
    return list(_PARAMS[scheme][0])


def required_params(scheme: str) -> list[str]:
    """The parameters of ``scheme`` that have no default."""
    get_scheme(scheme)
    return list(_PARAMS[scheme][1])


def takes_seed(scheme: str) -> bool:
    """Whether ``scheme`` was registered with ``takes_seed=True``."""
    return scheme in _SEEDED


def promises_sorted(scheme: str) -> bool:
    """Whether ``scheme`` was registered with ``sorted_output=True``."""
    return scheme in _SORTED
