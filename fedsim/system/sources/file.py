"""``system.source: file``: the user's table of device profiles, one row per party.

CSV, JSON (a list of objects) or Parquet, rows in party order, columns
``ms_per_sample``, ``upload_kbps``, ``download_kbps`` and optionally ``availability``
(``"start-end;start-end"``, or in JSON a list of ``[start, end]``; empty: always
online) and ``period_s`` (the pattern repeats every so many seconds; empty: never).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsim.system.profiles import DeviceProfiles, ProfileError, make_profiles
from fedsim.system.sources import DeviceSource, SystemParams, register
from fedsim.system.traces import COLUMNS, parse_intervals, read_table
from fedsim.util.params import hp


@dataclass
class FileParams(SystemParams):
    path: str | None = hp(None, help="the table: .csv, .json or .parquet, one row per party", source="-")


def _number(value: Any, column: str, row: int, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ProfileError(f"{what}: {column} of row {row} is {value!r}; allowed: a number") from None


def _period(row: dict[str, Any], i: int, what: str) -> float:
    value = row.get("period_s")
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return math.inf
    return _number(value, "period_s", i, what)


@register
class File(DeviceSource):
    name = "file"
    summary = "a CSV, JSON or Parquet table of device profiles, one row per party"
    paper = "-"
    Params = FileParams

    def profiles(self, params: Any, n_parties: int, seed: int) -> DeviceProfiles:
        if params.path is None:
            raise ProfileError("system.source file needs system.path (a .csv, .json or .parquet table)")
        what = f"system.path '{params.path}'"
        rows = read_table(Path(params.path))
        cols = {c: [_number(r[c], c, i, what) for i, r in enumerate(rows)] for c in COLUMNS}
        intervals = [parse_intervals(r.get("availability"), i, what) for i, r in enumerate(rows)]
        timed = any(iv is not None for iv in intervals)
        periods = [_period(r, i, what) for i, r in enumerate(rows)] if timed else None
        return make_profiles(n_parties, *(cols[c] for c in COLUMNS), what, intervals if timed else None, periods)
