"""Time strings for the dashboard, made on the server in a named zone, never the browser's.

The page shows these strings as they are: a browser in another zone, or a server whose
local zone differs from the app's, cannot shift them.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo

UTC = timezone.utc


def offset(dt: datetime) -> str:
    """`+08:00`, `-04:00`, `+05:45`: the UTC offset of an aware datetime."""
    delta = dt.utcoffset()
    minutes = round(delta.total_seconds() / 60) if delta is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def zoned(ts: float, zone: tzinfo) -> str:
    """`2026-11-25 07:30:00 +08:00`: POSIX instant `ts` on the wall clock of `zone`."""
    dt = datetime.fromtimestamp(ts, zone)
    return f"{dt:%Y-%m-%d %H:%M:%S} {offset(dt)}"


def clock(ts: float, zone: tzinfo) -> str:
    """`07:30`: the wall clock time of POSIX instant `ts` in `zone`, to the minute."""
    return f"{datetime.fromtimestamp(ts, zone):%H:%M}"


def utc(ts: float) -> str:
    """`2026-11-24 23:30:00 UTC`."""
    return f"{datetime.fromtimestamp(ts, UTC):%Y-%m-%d %H:%M:%S} UTC"


def duration(seconds: float) -> str:
    """A short length of time: `0.03 ms`, `850 ms`, `42s`, `3m 05s`, `2h 10m`, `3d 4h`."""
    seconds = abs(seconds)
    if seconds < 0.01:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def relative(ts: float, now: float) -> str:
    """`in 3m 05s` or `12s ago`."""
    text = duration(ts - now)
    return f"in {text}" if ts >= now else f"{text} ago"
