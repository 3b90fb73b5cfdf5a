"""Watch a run for deprecated Flower: what tests/engines checks on every engine.

Flower says a feature is deprecated with a WARNING record on its ``flwr`` logger
(``fedsim.util.flower_compat.DEPRECATION_MARKER``; tests/conftest.py fails any test during
which one is logged), and Python libraries with ``DeprecationWarning``. A notice shows
only while Flower's logger lets warnings through: the Ray engine used to raise it to
ERROR for the whole run to hide ``run_simulation``'s.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import flwr

from fedsim.server.app import RunHooks

FLOWER = Path(flwr.__file__).parent
OURS = tuple(Path(__file__).resolve().parents[2] / pkg for pkg in ("fedsim", "strategies", "attacks", "partitioners"))
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def flower_or_ours(w: warnings.WarningMessage) -> bool:
    """A warning raised in Flower's code, or attributed to fedsim's (a deprecated API
    fedsim calls: Flower's or any other library's warning points at the caller)."""
    path = Path(w.filename)
    return path.is_relative_to(FLOWER) or any(path.is_relative_to(p) for p in OURS)


@dataclass
class Watch:
    """What a watched run showed: per round, whether Flower's warnings reached its
    handlers; the deprecation warnings raised in Flower's code or fedsim's."""

    shown: list[bool] = field(default_factory=list)
    deprecated: list[str] = field(default_factory=list)

    @property
    def hooks(self) -> RunHooks:
        """Hooks for ``fedsim.run``: called from inside the run (the ServerApp's thread)."""
        return RunHooks(on_round=lambda row: self.shown.append(logging.getLogger("flwr").isEnabledFor(logging.WARNING)))

    def check(self, rounds: int) -> None:
        assert self.shown == [True] * rounds, "Flower's warnings (its deprecation notices) are hidden during the run"
        assert self.deprecated == []


@contextmanager
def watching_flower() -> Iterator[Watch]:
    """Record every warning of the block; the watch keeps the deprecations of Flower's or fedsim's."""
    watch = Watch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield watch
    watch.deprecated = [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, DEPRECATIONS) and flower_or_ours(w)
    ]
