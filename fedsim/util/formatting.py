"""Numbers as text in fedsim's Markdown: one place for how the sweep tables, the reports
and a tune's report write a value, a percentage, a mean ± std and the mark of a
diverged run, so that the same number reads the same in every file.
"""

from __future__ import annotations

from typing import Any

#: what a cell shows for a value that is absent (an en dash, as the tables print it)
MISSING = "–"


def format_value(value: Any, float_format: str = ".4f", missing: str = MISSING) -> str:
    """A summary value in a cell: floats with ``float_format`` (``.4f``: 0.8123), a dict
    as ``k=v`` pairs (a partition's settings), ``missing`` for None, anything else as ``str``."""
    if isinstance(value, float):
        return f"{value:{float_format}}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_value(v, float_format, missing)}" for k, v in value.items())
    return missing if value is None else str(value)


def format_percent(value: float | None, digits: int = 2, missing: str = MISSING) -> str:
    """A fraction in percent: 0.8123 -> ``81.23``; ``missing`` for None."""
    return missing if value is None else f"{100 * value:.{digits}f}"


def format_mean_std(mean: float | None, std: float | None, percent: bool = True, digits: int | None = None) -> str:
    """``82.00 ± 1.23`` (percent, 2 decimals) or ``0.5123 ± 0.0100`` (4 decimals); ``–`` when empty."""
    if mean is None:
        return MISSING
    scale = 100.0 if percent else 1.0
    d = digits if digits is not None else (2 if percent else 4)
    text = f"{mean * scale:.{d}f}"
    if std is not None:
        text += f" ± {std * scale:.{d}f}"
    return text


def diverged_mark(n: int) -> str:
    """`` † (2 diverged)`` after a number that ``n`` diverged runs enter, else ``""``."""
    return f" † ({n} diverged)" if n else ""


def one_line_error(exc: BaseException, limit: int = 400) -> str:
    """``Type: message`` on one line, at most ``limit`` characters (for an index, a CSV
    cell or a log line)."""
    msg = " ".join(str(exc).split()) or "(no message)"
    text = f"{type(exc).__name__}: {msg}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
