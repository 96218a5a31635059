"""Instants in the CLI's output: in the app's zone with its UTC offset as text, and as
POSIX seconds named `*_ts` in `--json`.

Worker info (`inspect stats`, `status`) and event fields hold instants as epoch floats
under the names in `TIME_FIELDS`; these two functions turn every one of them, however
deep in the dict, into what the reader needs.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from ..timezones import format_time

#: The keys whose numbers are instants (POSIX seconds), wherever they appear.
TIME_FIELDS = frozenset(
    {
        "time",
        "started",
        "time_start",
        "eta",
        "expires",
        "slot",
        "next_run",
        "timestamp",
        "since",
        "last_failover",
    }
)


def _instant(key: Any, value: Any) -> bool:
    return key in TIME_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool)


def zoned(value: Any, zone: tzinfo) -> Any:
    """`value` with each instant replaced by `2026-11-24 16:30:01.123+08:00` in `zone`."""
    if isinstance(value, dict):
        return {
            k: format_time(v, zone) if _instant(k, v) else zoned(v, zone) for k, v in value.items()
        }
    if isinstance(value, list):
        return [zoned(item, zone) for item in value]
    return value


def stamped(value: Any) -> Any:
    """`value` with each instant's key renamed `KEY_ts` (its number kept), for --json."""
    if isinstance(value, dict):
        return {
            (f"{k}_ts" if _instant(k, v) else k): v if _instant(k, v) else stamped(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [stamped(item) for item in value]
    return value
