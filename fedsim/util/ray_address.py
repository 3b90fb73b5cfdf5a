"""``engine.ray_address``: is the Ray head there? Checked before a run writes anything.

A Ray driver retries a dead head's GCS for ever (10 minutes seen, deaf to SIGTERM); a
plain TCP connect with a timeout tells in seconds.
"""

from __future__ import annotations

import os
import socket
import tempfile

from fedsim.errors import ConfigError


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConfigError unless the Ray head at ``address`` (``host:port``, or ``auto``: the
    cluster Ray last started on this machine) accepts a connection within ``timeout``."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or _current_cluster() or ""
        if not address:
            raise ConfigError(
                "engine.ray_address=auto: no Ray cluster was started on this machine; start one with "
                "'ray start --head' or leave engine.ray_address unset for a private local Ray"
            )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"config key 'engine.ray_address' = {address!r} must be host:port (e.g. 10.0.0.5:6379) or auto"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray head at {address} ({exc.strerror or exc}): start it there with "
            f"'ray start --head --port={port}', or leave engine.ray_address unset for a private local Ray"
        ) from None


def _current_cluster() -> str | None:
    """The address in Ray's ``ray_current_cluster`` file, if any."""
    path = os.path.join(os.environ.get("RAY_TMPDIR", tempfile.gettempdir()), "ray", "ray_current_cluster")
    try:
        with open(path) as fh:
            return fh.read().strip() or None
    except OSError:
        return None
