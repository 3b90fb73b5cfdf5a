"""User-facing errors.

Every error a user can cause (a bad config key, a missing dataset, a corrupt file)
derives from :class:`FedsimError`. The CLI prints such an error as one line on
stderr and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FedsimError(Exception):
    """An error caused by the user's input; its message is one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line, always: the CLI contract says so, and multi-line messages from
        # libraries (OmegaConf, numpy) are folded here rather than at every raise.
        super().__init__(" ".join(str(message).split()))


class ConfigError(FedsimError):
    """A config key is unknown, or its value has the wrong type or range."""


class DataError(FedsimError):
    """A dataset cannot be found or read."""


class RunDirError(FedsimError):
    """The run directory cannot be used as asked (exists, is a file, is corrupt)."""


class RunAborted(FedsimError):
    """A run stopped on purpose (too many client failures, non-finite model).

    The run directory holds a resumable checkpoint when this is raised.
    """


class DiskFull(FedsimError):
    """The disk that holds the run is full (or its quota exceeded): the machine's failure,
    never a client's. The run stops before anything of the round is aggregated; the
    last checkpoint is intact and ``--resume`` continues from it."""
