"""FedScale's trace files read without executing anything, and the user's table of profiles.

FedScale (Lai et al. 2022) ships its device and availability traces as pickles:
``client_device_capacity`` (``{client_id: {"computation": ms per sample,
"communication": kbit/s}}``) and ``client_behave_trace`` (``{client_id: {"active":
[...], "inactive": [...], "finish_time": s, ...}}``). Unpickling can run any code a file
names, so :class:`DataOnlyUnpickler` resolves no global at all: a pickle holding only
dicts, lists, tuples, numbers, strings, booleans and None loads; anything else (a numpy
scalar, a class) is refused with one line. The same structures are read from JSON
(``fedsim system convert`` writes them: README "System heterogeneity").

A ``file`` source's table (CSV, JSON or Parquet) has one row per party: columns
``ms_per_sample``, ``upload_kbps``, ``download_kbps``, optionally ``availability``
(``"start-end;start-end"`` in CSV and Parquet, a list of ``[start, end]`` in JSON) and
``period_s``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
from pathlib import Path
from typing import Any

from fedsim.system.profiles import ProfileError

#: what a trace may hold
PLAIN = (dict, list, tuple, int, float, str, bool, type(None))


class DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves no global: no class, no function, so nothing runs."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"it names {module}.{name}; allowed: only dicts, lists, tuples, numbers and strings"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(
            "it holds a persistent id; allowed: only dicts, lists, tuples, numbers and strings"
        )


def _check_plain(value: Any, what: str, depth: int = 0) -> None:
    if not isinstance(value, PLAIN) or depth > 8:
        raise ProfileError(f"{what} holds a {type(value).__name__}; allowed: dicts, lists, numbers and strings")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, what, depth + 1)
            _check_plain(v, what, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_plain(v, what, depth + 1)


def load_plain(path: Path, what: str) -> Any:
    """A pickle (restricted: :class:`DataOnlyUnpickler`) or a JSON file of plain data."""
    if not path.is_file():
        raise ProfileError(f"{what} '{path}' does not exist")
    raw = path.read_bytes()
    try:
        if path.suffix.lower() == ".json":
            value = json.loads(raw.decode())
        else:
            value = DataOnlyUnpickler(io.BytesIO(raw)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, UnicodeDecodeError, IndexError, KeyError) as exc:
        raise ProfileError(f"{what} '{path}' cannot be read: {str(exc).strip() or type(exc).__name__}") from exc
    _check_plain(value, f"{what} '{path}'")
    return value


def _client_map(value: Any, what: str) -> dict[int, dict]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ProfileError(f"{what} must map client ids to dicts")
    try:
        return {int(k): v for k, v in value.items()}
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{what}: client ids must be integers ({exc})") from exc


def fedscale_devices(path: Path) -> dict[int, tuple[float, float]]:
    """client id -> (ms per sample, kbit/s) from a ``client_device_capacity`` file."""
    what = f"system.device_file '{path}'"
    out = {}
    for cid, d in _client_map(load_plain(path, "system.device_file"), what).items():
        try:
            out[cid] = (float(d["computation"]), float(d["communication"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{what}: client {cid} lacks a number 'computation' or 'communication'") from exc
    return out


def fedscale_behaviour(path: Path) -> dict[int, tuple[list[tuple[float, float]], float]]:
    """client id -> (its ``[active, inactive)`` intervals, ``finish_time``) from a
    ``client_behave_trace`` file."""
    what = f"system.trace_file '{path}'"
    out = {}
    for cid, d in _client_map(load_plain(path, "system.trace_file"), what).items():
        try:
            active = [float(a) for a in d["active"]]
            inactive = [float(b) for b in d["inactive"]]
            finish = float(d["finish_time"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{what}: client {cid} needs lists 'active', 'inactive' and a 'finish_time'") from exc
        if len(active) != len(inactive):
            raise ProfileError(f"{what}: client {cid} has {len(active)} 'active' and {len(inactive)} 'inactive' times")
        out[cid] = (list(zip(active, inactive, strict=True)), finish)
    return out


COLUMNS = ("ms_per_sample", "upload_kbps", "download_kbps")


def parse_intervals(text: Any, row: int, what: str) -> list[tuple[float, float]] | None:
    """``"0-3600;7200-9000"`` or ``[[0, 3600], [7200, 9000]]`` -> intervals; empty: None."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or text == "":
        return None
    try:
        if isinstance(text, str):
            return [tuple(float(x) for x in part.split("-")) for part in text.split(";") if part.strip()]  # type: ignore[misc]
        return [(float(a), float(b)) for a, b in text]
    except (TypeError, ValueError) as exc:
        raise ProfileError(
            f"{what}: availability of row {row} is {text!r}; allowed: 'start-end;start-end' or [[start, end], ...]"
        ) from exc


def read_table(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``file`` source's table (CSV, JSON list of objects, Parquet)."""
    what = f"system.path '{path}'"
    if not path.is_file():
        raise ProfileError(f"{what} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="") as fh:
            rows: list[dict[str, Any]] = list(csv.DictReader(fh))
    elif suffix == ".json":
        try:
            rows = json.loads(path.read_text())
        except ValueError as exc:
            raise ProfileError(f"{what} is not valid JSON: {exc}") from exc
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ProfileError(f"{what} must hold a list of objects, one per party")
    elif suffix == ".parquet":
        try:  # optional, heavy libraries (the hf extra brings them): only for Parquet tables
            import pandas as pd
            import pyarrow  # noqa: F401  (pandas' Parquet engine)
        except ImportError as exc:
            raise ProfileError(
                f"{what} is a Parquet table, which needs pandas and pyarrow: pip install -e '.[hf]', "
                "or write it as .csv or .json"
            ) from exc
        rows = pd.read_parquet(path).to_dict("records")
    else:
        raise ProfileError(f"{what} has suffix '{suffix}'; allowed: .csv, .json, .parquet")
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if missing:
        raise ProfileError(f"{what} lacks the column '{missing[0]}'; needed: {', '.join(COLUMNS)}")
    return rows
