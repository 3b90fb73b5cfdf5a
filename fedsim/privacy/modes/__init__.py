"""Privacy modes (``privacy.mode``): plug-ins that say what a run protects and how.

A mode is one file of this package (found on first use: no import line anywhere) with a
:class:`PrivacyMode` subclass decorated with :func:`register`. It declares its
``privacy.*`` keys in ``Params`` (a subclass of
:class:`fedsim.schema.sections.PrivacyConfig`, the accounted modes' through
:class:`AccountedParams`) and which of fedsim's two mechanisms it is:

* **client-level** (``client_level``): the server draws a Poisson cohort, clips each
  update (or checks the clients' clipping, ``client_side``, done by the mode's
  ``client_mod`` in the ClientApp), noises the mean (:mod:`fedsim.privacy.central`);
  ``adaptive``: the clipping norm follows a quantile of the update norms;
* **sample-level** (``per_sample``): every party trains with DP-SGD (:mod:`fedsim.privacy.dpsgd`).

``refuse(cfg, algorithm)`` says why the rest of the config cannot run the mode. The
server's ledger and accounting (:mod:`fedsim.privacy.run`) follow these declarations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import strategies
from fedsim.privacy.accounting import ACCOUNTANTS
from fedsim.schema.sections import PrivacyConfig
from fedsim.util.params import hp
from fedsim.util.plugins import Plugin, Registry

#: a Flower client mod: (message, context, call_next) -> message
Mod = Callable[[Any, Any, Callable[[Any, Any], Any]], Any]


@dataclass
class AccountedParams(PrivacyConfig):
    """``privacy.*`` of every mode that spends a budget: the noise and the accounting."""

    noise_multiplier: float = hp(
        1.0,
        ge=0,
        help="sigma: noise std over the clipping norm (of an update, or of a per-sample gradient for dpsgd)",
        source="McMahan et al. 2018; Abadi et al. 2016",
    )
    target_delta: float | None = hp(
        None,
        gt=0,
        lt=1,
        help="delta of the reported epsilon, below 1/N",
        source="null: min(1e-5, 0.1/N)",
    )
    target_epsilon: float | None = hp(
        None,
        gt=0,
        help="stop before the round that would spend more; with calibrate, the budget to calibrate the noise for",
        source="null: no budget",
    )
    calibrate: bool = hp(
        False, help="choose noise_multiplier so that federation.rounds rounds spend target_epsilon", source="-"
    )
    accountant: str = hp(
        "rdp", choices=ACCOUNTANTS, help="the accountant of epsilon", source="dp-accounting's RDP (Mironov 2017)"
    )


class PrivacyMode(Plugin):
    """One privacy mode (module docstring)."""

    Params: type = PrivacyConfig
    client_level: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False
    client_side: ClassVar[bool] = False
    per_sample: ClassVar[bool] = False

    def client_mod(self, params: PrivacyConfig) -> Mod | None:
        """The ClientApp's mod that clips a reply on the client (``client_side``), or None."""
        return None

    def refuse(self, cfg: Any, algorithm: Any) -> str | None:
        """Why ``cfg`` cannot run this mode with ``algorithm`` (the registry's Algorithm), or None."""
        return None

    def check(self, cfg: Any) -> str | None:
        return self.refuse(cfg, strategies.get(cfg.strategy.name))


class AccountedMode(PrivacyMode):
    """A mode that spends a privacy budget: the checks of its accounting keys."""

    Params: type = AccountedParams

    def refuse(self, cfg: Any, algorithm: Any) -> str | None:
        p = cfg.privacy
        if p.calibrate and p.target_epsilon is None:
            return "privacy.calibrate: true needs privacy.target_epsilon (the epsilon to calibrate the noise for)"
        if p.calibrate and p.noise_multiplier != PrivacyConfig.noise_multiplier:
            return "privacy.calibrate: true chooses privacy.noise_multiplier itself: remove one of them"
        if p.target_epsilon is not None and p.noise_multiplier == 0 and not p.calibrate:
            return "privacy.target_epsilon needs privacy.noise_multiplier > 0 (without noise epsilon is infinite)"
        return None


#: the privacy modes: the modules of fedsim/privacy/modes, listed in this order (then any other file's)
PRIVACY_MODES: Registry[PrivacyMode] = Registry(
    "privacy mode",
    "fedsim.privacy.modes",
    section="privacy",
    chooser="mode",
    base=PrivacyConfig,
    ordered=True,
    first=("none", "client_level", "dpsgd"),
)


def register(cls: type[PrivacyMode]) -> type[PrivacyMode]:
    """Class decorator: make a mode available to ``privacy.mode``."""
    return PRIVACY_MODES.register(cls)


def unregister(name: str) -> None:
    """Remove a mode (tests that register their own)."""
    PRIVACY_MODES.unregister(name)


def get(name: str) -> PrivacyMode:
    return PRIVACY_MODES.get(name)


def available() -> list[str]:
    return PRIVACY_MODES.available()


__all__ = [
    "PRIVACY_MODES",
    "AccountedMode",
    "AccountedParams",
    "Mod",
    "PrivacyMode",
    "available",
    "get",
    "register",
    "unregister",
]
