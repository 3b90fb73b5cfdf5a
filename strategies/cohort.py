"""The cohort of a round: how many parties, and a Grid that shows only them; the
local engine's party -> node map."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from fedsim.util.flower_compat import NodeInfo


def cohort_size(n: int, fraction: float, minimum: int) -> int:
    """max(minimum, floor(n * fraction)), at most n."""
    # the epsilon keeps 0.3 * 10 from flooring to 2
    return max(min(n, minimum), min(n, int(math.floor(n * fraction + 1e-9))))


def holdout_count(value: float, n_parties: int) -> int:
    """The parties ``federation.holdout_parties`` holds out: ``round(value * n)`` for a
    share in (0, 1), ``value`` for a count >= 1; at most n - 1."""
    k = int(value) if value >= 1 else int(round(value * n_parties))
    return min(max(k, 0), n_parties - 1)


def malicious_count(fraction: float, n_parties: int) -> int:
    """The malicious parties of ``attack.fraction``: floor(fraction x n_parties), at least
    one for a fraction above 0 (0.2 x 10 = 2, 0.2 x 4 = 1; the epsilon keeps 0.3 x 10
    from flooring to 2)."""
    if fraction <= 0:
        return 0
    return min(n_parties, max(1, int(math.floor(fraction * n_parties + 1e-9))))


class CohortGrid(Grid):
    """A view of a Grid that shows only the sampled nodes.

    Flower's strategies sample with the process-global ``random`` module; handing
    them this view (with ``fraction = 1``) lets the whole ``configure_*`` chain of a
    Flower strategy run unchanged while the cohort comes from the seed.
    """

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self._grid = grid
        self._node_ids = list(node_ids)

    def set_run(self, run: Any) -> None:  # pragma: no cover - delegation
        self._grid.set_run(run)

    @property
    def run(self) -> Any:  # pragma: no cover - delegation
        return self._grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # pragma: no cover
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._node_ids)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return (NodeInfo(node_id=n) for n in self._node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # pragma: no cover
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # pragma: no cover
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:  # pragma: no cover
        return self._grid.send_and_receive(messages, timeout=timeout)


class ConsecutiveNodes(Mapping):
    """``{first + i: to + i for i in range(n)}`` without its n entries: the local engine's
    party -> node map, and by :meth:`inverse` its node -> party map. As dicts, a million
    parties' maps held ~300 MB in the grid and the strategy (benchmarks/scale.py)."""

    __slots__ = ("first", "n", "to")

    def __init__(self, n: int, to: int, first: int = 0) -> None:
        self.n, self.to, self.first = int(n), int(to), int(first)

    def __getitem__(self, key: Any) -> int:
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key - self.first < self.n:
            raise KeyError(key)
        return key - self.first + self.to

    def __contains__(self, key: object) -> bool:
        return not isinstance(key, bool) and isinstance(key, int) and 0 <= key - self.first < self.n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.first, self.first + self.n))

    def inverse(self) -> ConsecutiveNodes:
        return ConsecutiveNodes(self.n, self.first, self.to)


def invert(mapping: Mapping[int, int]) -> Mapping[int, int]:
    """value -> key of a one-to-one map."""
    if isinstance(mapping, ConsecutiveNodes):
        return mapping.inverse()
    return {v: k for k, v in mapping.items()}
