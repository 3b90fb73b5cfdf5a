"""``privacy.mode: none``: no differential privacy (the default)."""

from __future__ import annotations

from fedsim.privacy.modes import PrivacyMode, register


@register
class NoPrivacy(PrivacyMode):
    name = "none"
    summary = "no differential privacy"
    paper = "-"
