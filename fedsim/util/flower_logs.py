"""Flower's log level under fedsim."""

from __future__ import annotations

import logging


def quiet_flower() -> None:
    """Flower logs every round at INFO on its own handler; fedsim records rounds itself.

    Its logger is set to WARNING unless fedsim's own logger is at DEBUG.
    """
    if not logging.getLogger("fedsim").isEnabledFor(logging.DEBUG):
        logging.getLogger("flwr").setLevel(logging.WARNING)
