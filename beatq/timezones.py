"""Time zones and the instants read or printed in them: `zoneinfo` inside, pytz zones and
naive datetimes accepted at the edge, every printed time carrying its UTC offset.

(Waiting until an instant is another matter: `wakeup.py`.)"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .exceptions import ConfigurationError

UTC = timezone.utc


def get_zone(zone: str | tzinfo | None) -> tzinfo:
    """Return a `zoneinfo` zone for a name, a pytz zone, or a zoneinfo zone (None means UTC)."""
    if zone is None:
        return ZoneInfo("UTC")
    if isinstance(zone, str):
        try:
            return ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"unknown time zone {zone!r}; use an IANA name such as 'UTC' or 'Asia/Shanghai'"
            ) from None
    name = getattr(zone, "zone", None)  # a pytz zone carries its IANA name here
    if isinstance(name, str):
        return get_zone(name)
    return zone


def to_timestamp(value: datetime, zone: tzinfo) -> float:
    """The POSIX instant of `value`; a naive datetime is read in `zone`.

    An aware datetime (zoneinfo, a pytz `localize()` result, a fixed offset) is exact.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=zone)
    return value.timestamp()


def format_time(ts: float, zone: tzinfo) -> str:
    """`2026-11-24 16:30:01.123+08:00`: local time with its UTC offset."""
    dt = datetime.fromtimestamp(ts, zone)
    return dt.isoformat(sep=" ", timespec="milliseconds")


def format_entry_time(ts: float, zone: tzinfo, own: tzinfo) -> str:
    """`ts` in the app's `zone` (every logged time is, SPEC 4), followed by the entry's
    `own` wall clock when its zone is another: `2026-11-24 08:30:00.000+00:00 (16:30:00
    Asia/Shanghai)`."""
    shown = format_time(ts, zone)
    if str(own) == str(zone):
        return shown
    return f"{shown} ({datetime.fromtimestamp(ts, own):%H:%M:%S} {own})"


# Seconds from now beyond which a number is taken for an instant sent by mistake: a POSIX
# timestamp (1.7e9 today) given as `countdown=`/`expires=` would mean some 56 years ahead.
LONGEST_DELAY = 1e9  # about 31.7 years


def seconds_from_now(value: float | timedelta, name: str) -> float:
    """`countdown=`/`expires=` given as seconds from now (or a timedelta), checked: a
    number that reads as an instant is refused, naming what to pass instead."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds > LONGEST_DELAY:
        years = seconds / (365.25 * 86400)
        raise ValueError(
            f"{name}={value!r} is seconds from now, {years:.0f} years ahead: it looks like a "
            f"POSIX timestamp; pass {'eta' if name == 'countdown' else name}=datetime(...) "
            "for an instant, or the seconds from now"
        )
    return seconds


def expiry_timestamp(expires: float | timedelta | datetime | None, zone: tzinfo) -> float | None:
    """`expires` as seconds from now, a timedelta or a datetime, turned into an instant."""
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return to_timestamp(expires, zone)
    return time.time() + seconds_from_now(expires, "expires")
