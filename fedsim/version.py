"""fedsim's version (a module of its own: the package's ``__init__`` loads nothing else)."""

__version__ = "0.1.0"
