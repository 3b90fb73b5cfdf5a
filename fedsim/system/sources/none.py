"""``system.source: none``: no device profiles and no clock (the default)."""

from __future__ import annotations

from typing import Any

from fedsim.system.sources import DeviceSource, common_defaults, register


@register
class NoSystem(DeviceSource):
    name = "none"
    summary = "no simulated clock: rounds are counted, not timed"
    paper = "-"

    def check(self, cfg: Any) -> str | None:
        # the shared keys act only on the clock: one written without a source does nothing
        for key, default in common_defaults().items():
            if getattr(cfg.system, key) != default:
                return (
                    f"config key 'system.{key}' needs the simulated clock: set system.source "
                    "(synthetic, fedscale or file)"
                )
        return None
