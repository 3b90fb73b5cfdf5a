"""``asynchronous.mode: off``: synchronous rounds (``FedsimStrategy.start``), as before."""

from __future__ import annotations

from fedsim.asynchronous.servers import AsyncServer, register


@register
class Off(AsyncServer):
    name = "off"
    summary = "synchronous rounds: no event loop"
    paper = "-"
    asynchronous = False
