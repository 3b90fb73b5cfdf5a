"""The process that started the run hears of each round last, once the round is on disk
(the CLI's progress bar: ``RunHooks.on_round``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedsim.server.callbacks.base import RoundCallback, RoundRecord


class Progress(RoundCallback):
    def __init__(self, on_round: Callable[[dict[str, Any]], None]) -> None:
        self.on_round_row = on_round

    def on_round(self, rec: RoundRecord) -> None:
        self.on_round_row(rec.row)
