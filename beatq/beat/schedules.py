"""Schedules: plain objects with `next_after(dt)`, the next run strictly after `dt`.

No app and no clock inside: `next_after` works in `dt`'s zone and returns an aware
datetime in that zone (or None when nothing is left). The beat, `schedule check` and
the tests all call it. Users import these names from `beatq` or from `beatq.schedules`,
an alias module kept for code written against Celery's `celery.schedules`.

Daylight saving follows Vixie cron, as SPEC §4 states:
- an entry at fixed hours runs once per matching local day: a time skipped by a
  spring-forward gap runs at the first instant after the gap; a time that occurs twice
  runs at its first occurrence only;
- an entry whose hour field is `*` or `*/n` follows the clock that really passes: each
  matching minute of each hour that occurs, so both copies of a repeated hour and none
  of a skipped one;
- `every` counts elapsed time on a fixed grid (from `anchor`, the Unix epoch by
  default) and ignores clock changes.
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any

from .due import DueProtocol

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
_SEARCH_DAYS = 366 * 28  # a full cycle of weekdays and leap years: nothing matches beyond
_LONGEST_MONTH = {month: calendar.monthrange(2000, month)[1] for month in range(1, 13)}  # leap


class ScheduleSyntaxError(ValueError):
    """A schedule that cannot be parsed; the message names the field and the valid values."""


# Celery's name for what its crontab_parser raises; one class here, so `except
# ParseException` and `except ValueError` (Celery's out-of-range error) both catch it.
ParseException = ScheduleSyntaxError


# -- crontab ----------------------------------------------------------------------------
def _names(full: list[str], extra: dict[str, int], first: int) -> dict[str, int]:
    """Each full name and its three-letter abbreviation (as Celery's periodic-tasks table
    spells them: "sun", "sunday"), plus common longer abbreviations."""
    table = {name[:3]: i + first for i, name in enumerate(full)}
    table.update({name: i + first for i, name in enumerate(full)})
    return {**table, **extra}


_DAY_NAMES = _names(
    ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"],
    {"tues": 2, "thur": 4, "thurs": 4},
    0,
)
_MONTH_NAMES = _names(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september"]
    + ["october", "november", "december"],
    {"sept": 9},
    1,
)
_FIELDS = {
    # name: (low, high, names)
    "minute": (0, 59, {}),
    "hour": (0, 23, {}),
    "day_of_month": (1, 31, {}),
    "month_of_year": (1, 12, _MONTH_NAMES),
    "day_of_week": (0, 6, _DAY_NAMES),
}
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _value(text: str, field: str, names: dict[str, int]) -> int:
    text = text.strip().lower()
    if text in names:
        return names[text]
    if not text.isdigit():
        short = [name for name in names if len(name) == 3]
        valid = f" or a name ({', '.join(short)}, or in full)" if names else ""
        raise ScheduleSyntaxError(f"{field}: {text!r} is not a number{valid}")
    return int(text)


def parse_field(spec: Any, field: str) -> frozenset[int]:
    """The values a crontab field matches: `*`, `*/15`, `1-5`, `mon-fri`, `0,30`, 7, [1, 2]."""
    if isinstance(spec, (str, int)) and not isinstance(spec, bool):
        return _parse_text(spec, field)
    low, high, names = _FIELDS[field]
    return _parse_values(spec, field, low, high, names)


@functools.lru_cache(maxsize=4096)
def _parse_text(spec: str | int, field: str) -> frozenset[int]:
    """A field written as text or a number, read once: 10,000 entries added at once
    mostly share a few fields ("*", "0", "*/5"), and reading one costs ~20 µs."""
    low, high, names = _FIELDS[field]
    return _parse_values(spec, field, low, high, names)


def _parse_values(
    spec: Any, field: str, low: int, high: int, names: dict[str, int]
) -> frozenset[int]:
    if isinstance(spec, int) and not isinstance(spec, bool):
        parts: list[str] = [str(spec)]
    elif isinstance(spec, str):
        parts = spec.split(",")
    elif isinstance(spec, Iterable):
        return frozenset().union(*(_parse_values(i, field, low, high, names) for i in spec))
    else:
        raise ScheduleSyntaxError(f"{field}: {spec!r} is not a crontab field")
    values: set[int] = set()
    for part in parts:
        part = part.strip()
        rng, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleSyntaxError(f"{field}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if rng == "*":
            start, end = low, high
        elif "-" in rng:
            first, _, last = rng.partition("-")
            start, end = _value(first, field, names), _value(last, field, names)
        else:
            start = _value(rng, field, names)
            end = high if step_text else start
        # cron's 7 is Sunday too: accepted alone and in ranges ("5-7"), folded onto 0 below
        top = 7 if field == "day_of_week" else high
        for v in (start, end):
            if not low <= v <= top:
                raise ScheduleSyntaxError(f"{field}: {v} is out of range {low}-{top}")
        if start > end:
            raise ScheduleSyntaxError(f"{field}: range {rng!r} runs backwards")
        values.update(v % 7 if field == "day_of_week" else v for v in range(start, end + 1, step))
    if not values:
        raise ScheduleSyntaxError(f"{field}: {spec!r} matches nothing")
    return frozenset(values)


def _resolve(wall: datetime, zone: tzinfo) -> datetime:
    """The instant of a local wall time: its first occurrence, or the end of a gap."""
    first = wall.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap: fold=1 reads it with the offset after the change, fold=0 with the one
    # before; the change happens between the two readings. Find it to the second.
    lo = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    hi = first.astimezone(UTC)
    if lo > hi:
        lo, hi = hi, lo
    before = lo.astimezone(zone).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0).astimezone(zone)


class crontab_parser:  # noqa: N801 (Celery's name)
    """Celery's parser of one crontab field: `crontab_parser(60).parse("*/15")` is
    {0, 15, 30, 45}; `crontab_parser(max_, min_)` reads values from min_ to min_ + max_ - 1
    (hours `crontab_parser(24)`, days of week `(7)`, of month `(31, 1)`, months `(12, 1)`,
    these last three with their names too). Raises ParseException (a ValueError) naming
    the bad part."""

    _KNOWN = {
        (60, 0): "minute",
        (24, 0): "hour",
        (7, 0): "day_of_week",
        (31, 1): "day_of_month",
        (12, 1): "month_of_year",
    }

    def __init__(self, max_: int = 60, min_: int = 0) -> None:
        self.max_, self.min_ = max_, min_

    def parse(self, spec: str) -> set[int]:
        field = self._KNOWN.get((self.max_, self.min_))
        if field is not None:
            return set(parse_field(spec, field))
        high = self.min_ + self.max_ - 1
        return set(_parse_values(spec, "value", self.min_, high, {}))


class crontab(DueProtocol):  # noqa: N801 (Celery's name)
    """A cron schedule, with Celery's arguments: `crontab(minute=30, hour=7, day_of_week=1)`.

    `crontab.from_string("30 7 * * mon")` reads the five-field cron syntax; there, as in
    cron, a restricted day of month and day of week match when either does. With
    keyword arguments both must match, as in Celery. Two crontabs are equal when they
    run at the same times ("1,2" == "1-2"). `is_due`/`remaining_estimate` answer Celery's
    protocol (see beat/due.py; `nowfun=` and `app=` as Celery's).
    """

    def __init__(
        self,
        minute: Any = "*",
        hour: Any = "*",
        day_of_week: Any = "*",
        day_of_month: Any = "*",
        month_of_year: Any = "*",
        *,
        day_or: bool = False,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            # a misspelt field (`minutes=5`) must not leave a schedule that runs every minute
            names = ", ".join(sorted(unknown))
            raise TypeError(
                f"crontab() got unknown argument(s) {names}; it takes minute, hour, "
                "day_of_week, day_of_month, month_of_year, day_or, nowfun and app"
            )
        self.nowfun, self.app = nowfun, app
        self.spec = {
            "minute": minute,
            "hour": hour,
            "day_of_month": day_of_month,
            "month_of_year": month_of_year,
            "day_of_week": day_of_week,
        }
        self.minutes = sorted(parse_field(minute, "minute"))
        self.hours = sorted(parse_field(hour, "hour"))
        self.days_of_month = parse_field(day_of_month, "day_of_month")
        self.months = parse_field(month_of_year, "month_of_year")
        self.days_of_week = parse_field(day_of_week, "day_of_week")
        self.minute_set = frozenset(self.minutes)
        self.hour_set = frozenset(self.hours)
        # `*` and `*/n` hours follow the real clock; fixed hours run once a local day.
        self.follows_clock = isinstance(hour, str) and hour.strip().startswith("*")
        dom_any = isinstance(day_of_month, str) and day_of_month.strip() == "*"
        dow_any = isinstance(day_of_week, str) and day_of_week.strip() == "*"
        self.day_or = day_or and not dom_any and not dow_any
        if not self.day_or and not any(
            day <= _LONGEST_MONTH[month] for month in self.months for day in self.days_of_month
        ):
            raise ScheduleSyntaxError(
                f"crontab day_of_month {day_of_month!r} with month_of_year {month_of_year!r} "
                "never runs: none of those months has such a day; choose days every chosen "
                "month has (1-28 fits all) or add a month that has them"
            )

    @classmethod
    def from_string(cls, expr: str) -> crontab:
        """Read `m h dom mon dow` (or @daily, @hourly, ...)."""
        text = _ALIASES.get(expr.strip().lower(), expr)
        fields = text.split()
        if len(fields) != 5:
            raise ScheduleSyntaxError(
                f"cron {expr!r} has {len(fields)} fields; expected 5: minute hour "
                "day-of-month month day-of-week (e.g. '30 7 * * mon')"
            )
        minute, hour, dom, month, dow = fields
        return cls(minute, hour, dow, dom, month, day_or=True)

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days_of_month
        dow = (day.weekday() + 1) % 7 in self.days_of_week  # cron: Sunday is 0
        return (dom or dow) if self.day_or else (dom and dow)

    def next_after(self, dt: datetime) -> datetime | None:
        """The next run strictly after the aware datetime `dt`, in `dt`'s zone."""
        if dt.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        if self.follows_clock:
            return self._next_on_clock(dt)
        return self._next_fixed(dt)

    def _next_fixed(self, dt: datetime) -> datetime | None:
        zone = dt.tzinfo
        assert zone is not None
        start = dt.astimezone(zone).date() - timedelta(days=1)  # a gap may push a run past midnight
        # Compare instants in UTC: two datetimes of one zone compare by wall clock, blind to
        # `fold`, so 01:30 EDT would look later than 01:10 EST in the repeated hour.
        after = dt.astimezone(UTC)
        for offset in range(_SEARCH_DAYS):
            day = start + timedelta(days=offset)
            if not self.day_matches(day):
                continue
            for hour in self.hours:
                for minute in self.minutes:
                    at = _resolve(datetime.combine(day, time(hour, minute)), zone)
                    if at > after:
                        return at
        return None

    def _next_on_clock(self, dt: datetime) -> datetime | None:
        zone = dt.tzinfo
        assert zone is not None
        at = (dt.astimezone(UTC).replace(second=0, microsecond=0) + _MINUTE).astimezone(zone)
        limit = at + timedelta(days=_SEARCH_DAYS)
        while at < limit:
            if not self.day_matches(at.date()):
                nxt = _resolve(datetime.combine(at.date() + timedelta(days=1), time()), zone)
                at = nxt if nxt > at else at + _MINUTE
                continue
            if at.hour in self.hour_set and at.minute in self.minute_set:
                return at
            if at.hour in self.hour_set:
                later = [m for m in self.minutes if m > at.minute]
                step = (later[0] if later else 60) - at.minute
            else:
                step = 60 - at.minute
            nxt = (at.astimezone(UTC) + step * _MINUTE).astimezone(zone)
            if nxt.utcoffset() != at.utcoffset():
                # the clock changes on the way: walk minute by minute across the change
                nxt = (at.astimezone(UTC) + _MINUTE).astimezone(zone)
            at = nxt
        return None

    def _meaning(self) -> tuple[Any, ...]:
        # `follows_clock` counts: "*" and "0-23" hours differ on a daylight-saving day
        return (
            self.minute_set,
            self.hour_set,
            self.days_of_month,
            self.months,
            self.days_of_week,
            self.day_or,
            self.follows_clock,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and self._meaning() == other._meaning()

    def __hash__(self) -> int:
        return hash(self._meaning())

    def __str__(self) -> str:
        s = self.spec
        fields = [s["minute"], s["hour"], s["day_of_month"], s["month_of_year"], s["day_of_week"]]
        return " ".join(_field_text(f) for f in fields)

    def __repr__(self) -> str:
        return f"<crontab: {self}>"


def _field_text(spec: Any) -> str:
    if isinstance(spec, (str, int)):
        return str(spec)
    return ",".join(str(v) for v in spec)


# -- intervals and one-off times --------------------------------------------------------------
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """`30`, `30s`, `5m`, `1h30m`, `2d`, `500ms` or a timedelta, as a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        return _duration_text(value)
    raise ScheduleSyntaxError(
        f"{value!r} is not a duration; use seconds or units like 30s, 5m, 1h30m, 2d"
    )


@functools.lru_cache(maxsize=1024)
def _duration_text(value: str) -> timedelta:
    """A duration written as text, read once (every entry reads its default "1h")."""
    text = value.strip().lower().replace(" ", "")
    if text.replace(".", "", 1).isdigit():
        return timedelta(seconds=float(text))
    pos, seconds = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == len(text) and text:
        return timedelta(seconds=seconds)
    raise ScheduleSyntaxError(
        f"{value!r} is not a duration; use seconds or units like 30s, 5m, 1h30m, 2d"
    )


class every(DueProtocol):  # noqa: N801 (reads as `every("30s")`)
    """Runs every `interval`, on a grid counted in elapsed time from `anchor`.

    The grid makes slots the same whoever computes them: `every("30s")` runs at :00 and
    :30 of each minute, on every beat, before and after a restart. `is_due` and
    `remaining_estimate` answer Celery's protocol (see beat/due.py).
    """

    def __init__(
        self,
        interval: Any,
        anchor: datetime | None = None,
        *,
        nowfun: Callable[[], datetime] | None = None,
        app: Any = None,
    ) -> None:
        self.nowfun, self.app = nowfun, app
        self.interval = parse_duration(interval)
        if self.interval <= timedelta(0):
            raise ScheduleSyntaxError(f"interval {interval!r} must be positive")
        self.anchor = anchor or _EPOCH
        if self.anchor.tzinfo is None:
            raise ValueError("every(anchor=...) needs an aware datetime")
        self._step = self.interval // timedelta(microseconds=1)

    @property
    def run_every(self) -> timedelta:
        """Celery's name for the interval."""
        return self.interval

    @property
    def seconds(self) -> float:
        return self.interval.total_seconds()

    def next_after(self, dt: datetime) -> datetime:
        if dt.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        elapsed = (dt - self.anchor) // timedelta(microseconds=1)
        slots = elapsed // self._step + 1
        return (self.anchor + timedelta(microseconds=slots * self._step)).astimezone(dt.tzinfo)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, every) and (self.interval, self.anchor) == (
            other.interval,
            other.anchor,
        )

    def __hash__(self) -> int:
        return hash((self.interval, self.anchor))

    def __str__(self) -> str:
        return f"every {format_duration(self.interval)}"

    def __repr__(self) -> str:
        return f"<{self}>"


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class once:  # noqa: N801
    """Runs one time, at `at` (an aware datetime)."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("once(at) needs an aware datetime")
        self.at = at

    def next_after(self, dt: datetime) -> datetime | None:
        # by instant: a same-zone comparison would ignore `fold` in a repeated hour
        return self.at.astimezone(dt.tzinfo) if self.at.timestamp() > dt.timestamp() else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, once) and self.at == other.at

    def __hash__(self) -> int:
        return hash(self.at)

    def __str__(self) -> str:
        return f"at {self.at.isoformat()}"

    def __repr__(self) -> str:
        return f"<once {self.at.isoformat()}>"


def schedule(
    run_every: Any = None,
    relative: bool = False,
    nowfun: Callable[[], datetime] | None = None,
    app: Any = None,
) -> every:
    """Celery's `schedule(run_every=timedelta(...))` (seconds or a timedelta): an `every`.

    Its runs lie on beatq's grid, rounded to the interval, whatever `relative` says
    (Celery's `relative=True`; see `every`)."""
    if run_every is None:
        raise ScheduleSyntaxError("schedule() needs run_every: seconds or a timedelta")
    return every(run_every, nowfun=nowfun, app=app)


SOLAR_EVENTS = (
    "dawn_astronomical",
    "dawn_nautical",
    "dawn_civil",
    "sunrise",
    "solar_noon",
    "sunset",
    "dusk_civil",
    "dusk_nautical",
    "dusk_astronomical",
)


def solar(event: str, lat: float, lon: float, **_: Any) -> Any:
    """Celery's `solar(event, lat, lon)`: refused, loudly, until beatq computes it.

    A solar schedule that ran at the wrong minute would be worse than none, and beatq
    has no sun-position calculation it has tested yet, so this raises rather than
    returning a schedule."""
    raise NotImplementedError(
        f"solar({event!r}, {lat}, {lon}) is not supported by beatq yet: it has no tested "
        "sun-position calculation. Use a crontab at the event's local time instead, in "
        "the place's zone (a schedule file's timezone: key, or the app's timezone)"
    )


Schedule = crontab | every | once
