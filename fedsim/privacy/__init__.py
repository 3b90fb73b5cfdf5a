"""Differential privacy with accounting (``privacy.*``; README "Differential privacy").

* :mod:`.modes`: the modes (``privacy.mode``), one plug-in file each family;
* :mod:`.compat`: which configs and algorithms each mode combines with;
* :mod:`.accounting`: epsilon of subsampled Gaussian releases (Google's dp-accounting);
* :mod:`.central`: client-level DP-FedAvg around an algorithm's aggregate;
* :mod:`.mods`: the ClientApp's mod, the client-side modes' clipping mods;
* :mod:`.dpsgd`: DP-SGD on a party with Opacus;
* :mod:`.run`: a run's ledger, budget and records on the server.

This package imports only the light :mod:`.compat` and :mod:`.modes` on import (the
config's checks use them); the server, the client and the mods import the modules they
need.
"""

from fedsim.privacy.compat import CLIENT_LEVEL, MODES

__all__ = ["CLIENT_LEVEL", "MODES"]
