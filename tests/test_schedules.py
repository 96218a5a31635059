"""Schedules: `next_after` tables with DST instants worked out by hand, and a brute-force property.

Each table row gives the schedule, the zone, the previous run as a UTC instant, and the
runs expected after it as (UTC instant, UTC offset of the local time). The instants were
computed by hand from the tz database's 2026 rules:

- America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC);
  2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC).
- Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC);
  2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC).
- Australia/Lord_Howe: 2026-04-05 02:00 +11 -> 01:30 +10:30 (2026-04-04 15:00 UTC);
  2026-10-04 02:00 +10:30 -> 02:30 +11 (2026-10-03 15:30 UTC).
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beatq.beat.schedules import ScheduleSyntaxError, crontab, every, once, parse_duration

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
SHANGHAI = ZoneInfo("Asia/Shanghai")
KOLKATA = ZoneInfo("Asia/Kolkata")
ZULU = ZoneInfo("UTC")


def utc(text: str) -> datetime:
    """A hand-written UTC instant, '2026-03-08 07:00'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def offset(text: str) -> timedelta:
    """A hand-written UTC offset, '-04:00' or '+10:30'."""
    sign = -1 if text[0] == "-" else 1
    hours, minutes = text[1:].split(":")
    return sign * timedelta(hours=int(hours), minutes=int(minutes))


def runs_after(schedule, previous: datetime, count: int) -> list[datetime]:
    runs = []
    at = previous
    for _ in range(count):
        at = schedule.next_after(at)
        runs.append(at)
    return runs


def cron(expr: str) -> crontab:
    return crontab.from_string(expr)


# (schedule, zone, previous run in UTC, [(expected UTC instant, expected local offset), ...])
DST_ROWS = [
    # -- America/New_York ------------------------------------------------------------------
    pytest.param(
        cron("30 2 * * *"),
        NEW_YORK,
        "2026-03-07 05:00",  # Sat 00:00 EST
        [
            ("2026-03-07 07:30", "-05:00"),  # Sat 02:30 EST
            ("2026-03-08 07:00", "-04:00"),  # Sun 02:30 is skipped: 03:00 EDT, the end of the gap
            ("2026-03-09 06:30", "-04:00"),  # Mon 02:30 EDT
        ],
        id="new_york-gap-fixed-0230",
    ),
    pytest.param(
        cron("0 2 * * *"),
        NEW_YORK,
        "2026-03-07 08:00",  # Sat 03:00 EST
        [("2026-03-08 07:00", "-04:00"), ("2026-03-09 06:00", "-04:00")],
        id="new_york-gap-fixed-0200",
    ),
    pytest.param(
        cron("30 1 * * *"),
        NEW_YORK,
        "2026-10-31 06:00",  # Sat 02:00 EDT
        [
            ("2026-11-01 05:30", "-04:00"),  # 01:30 EDT, the first of the two 01:30s
            ("2026-11-02 06:30", "-05:00"),  # not 01:30 EST on Sunday: Monday 01:30 EST
        ],
        id="new_york-repeat-fixed-0130",
    ),
    pytest.param(
        crontab(minute="*/20", hour=1),
        NEW_YORK,
        "2026-11-01 04:00",  # 00:00 EDT
        [
            ("2026-11-01 05:00", "-04:00"),
            ("2026-11-01 05:20", "-04:00"),
            ("2026-11-01 05:40", "-04:00"),
            ("2026-11-02 06:00", "-05:00"),  # the EST copy of 01:xx is not run
        ],
        id="new_york-repeat-fixed-hour-every-20-minutes",
    ),
    pytest.param(
        cron("30 1 * * *"),
        NEW_YORK,
        "2026-11-01 06:10",  # 01:10 EST, in the second copy: 01:30 EDT is already past
        [("2026-11-02 06:30", "-05:00")],
        id="new_york-repeat-fixed-from-the-second-copy",
    ),
    pytest.param(
        crontab(minute="*/20", hour=1),
        NEW_YORK,
        "2026-11-01 06:10",  # 01:10 EST
        [("2026-11-02 06:00", "-05:00")],
        id="new_york-repeat-fixed-hour-from-the-second-copy",
    ),
    pytest.param(
        crontab(minute=30),
        NEW_YORK,
        "2026-03-08 05:45",  # 00:45 EST
        [
            ("2026-03-08 06:30", "-05:00"),  # 01:30 EST
            ("2026-03-08 07:30", "-04:00"),  # 03:30 EDT: 02:30 never happens
            ("2026-03-08 08:30", "-04:00"),
        ],
        id="new_york-gap-star-hour",
    ),
    pytest.param(
        crontab(minute=30),
        NEW_YORK,
        "2026-11-01 04:45",  # 00:45 EDT
        [
            ("2026-11-01 05:30", "-04:00"),  # 01:30 EDT
            ("2026-11-01 06:30", "-05:00"),  # 01:30 EST
            ("2026-11-01 07:30", "-05:00"),  # 02:30 EST
        ],
        id="new_york-repeat-star-hour",
    ),
    pytest.param(
        cron("*/15 * * * *"),
        NEW_YORK,
        "2026-03-08 06:40",  # 01:40 EST
        [
            ("2026-03-08 06:45", "-05:00"),
            ("2026-03-08 07:00", "-04:00"),
            ("2026-03-08 07:15", "-04:00"),
        ],
        id="new_york-gap-every-15-minutes",
    ),
    pytest.param(
        cron("*/15 * * * *"),
        NEW_YORK,
        "2026-11-01 05:40",  # 01:40 EDT
        [
            ("2026-11-01 05:45", "-04:00"),
            ("2026-11-01 06:00", "-05:00"),
            ("2026-11-01 06:15", "-05:00"),
        ],
        id="new_york-repeat-every-15-minutes",
    ),
    pytest.param(
        crontab(minute=0, hour="*/2"),
        NEW_YORK,
        "2026-03-08 05:30",  # 00:30 EST
        [("2026-03-08 08:00", "-04:00"), ("2026-03-08 10:00", "-04:00")],  # 04:00 and 06:00 EDT
        id="new_york-gap-even-hours",
    ),
    pytest.param(
        every("1h"),
        NEW_YORK,
        "2026-03-08 05:30",  # 00:30 EST
        [
            ("2026-03-08 06:00", "-05:00"),
            ("2026-03-08 07:00", "-04:00"),
            ("2026-03-08 08:00", "-04:00"),
        ],
        id="new_york-gap-every-1h",
    ),
    pytest.param(
        every("1h"),
        NEW_YORK,
        "2026-11-01 04:30",  # 00:30 EDT
        [
            ("2026-11-01 05:00", "-04:00"),
            ("2026-11-01 06:00", "-05:00"),
            ("2026-11-01 07:00", "-05:00"),
        ],
        id="new_york-repeat-every-1h",
    ),
    # -- Europe/Berlin ---------------------------------------------------------------------
    pytest.param(
        cron("30 2 * * *"),
        BERLIN,
        "2026-03-27 23:00",  # Sat 00:00 CET
        [
            ("2026-03-28 01:30", "+01:00"),  # Sat 02:30 CET
            ("2026-03-29 01:00", "+02:00"),  # Sun 03:00 CEST, the end of the gap
            ("2026-03-30 00:30", "+02:00"),  # Mon 02:30 CEST
        ],
        id="berlin-gap-fixed-0230",
    ),
    pytest.param(
        cron("30 2 * * *"),
        BERLIN,
        "2026-10-24 22:00",  # Sun 00:00 CEST
        [("2026-10-25 00:30", "+02:00"), ("2026-10-26 01:30", "+01:00")],
        id="berlin-repeat-fixed-0230",
    ),
    pytest.param(
        crontab(minute=30),
        BERLIN,
        "2026-03-29 00:00",  # 01:00 CET
        [("2026-03-29 00:30", "+01:00"), ("2026-03-29 01:30", "+02:00")],  # 01:30 CET, 03:30 CEST
        id="berlin-gap-star-hour",
    ),
    pytest.param(
        crontab(minute=30),
        BERLIN,
        "2026-10-24 23:45",  # 01:45 CEST
        [
            ("2026-10-25 00:30", "+02:00"),  # 02:30 CEST
            ("2026-10-25 01:30", "+01:00"),  # 02:30 CET
            ("2026-10-25 02:30", "+01:00"),  # 03:30 CET
        ],
        id="berlin-repeat-star-hour",
    ),
    pytest.param(
        cron("*/15 * * * *"),
        BERLIN,
        "2026-03-29 00:40",  # 01:40 CET
        [("2026-03-29 00:45", "+01:00"), ("2026-03-29 01:00", "+02:00")],  # 01:45 CET, 03:00 CEST
        id="berlin-gap-every-15-minutes",
    ),
    pytest.param(
        cron("*/15 * * * *"),
        BERLIN,
        "2026-10-25 00:50",  # 02:50 CEST
        [("2026-10-25 01:00", "+01:00"), ("2026-10-25 01:15", "+01:00")],  # 02:00, 02:15 CET
        id="berlin-repeat-every-15-minutes",
    ),
    pytest.param(
        every("1h"),
        BERLIN,
        "2026-03-28 23:30",  # 00:30 CET
        [
            ("2026-03-29 00:00", "+01:00"),
            ("2026-03-29 01:00", "+02:00"),
            ("2026-03-29 02:00", "+02:00"),
        ],
        id="berlin-gap-every-1h",
    ),
    pytest.param(
        every("1h"),
        BERLIN,
        "2026-10-24 23:30",  # 01:30 CEST
        [
            ("2026-10-25 00:00", "+02:00"),
            ("2026-10-25 01:00", "+01:00"),
            ("2026-10-25 02:00", "+01:00"),
        ],
        id="berlin-repeat-every-1h",
    ),
    # -- Australia/Lord_Howe: half-hour changes --------------------------------------------
    pytest.param(
        cron("15 2 * * *"),
        LORD_HOWE,
        "2026-10-02 14:00",  # Sat 00:30 +10:30
        [
            ("2026-10-02 15:45", "+10:30"),  # Sat 02:15 +10:30
            ("2026-10-03 15:30", "+11:00"),  # Sun 02:15 is skipped: 02:30 +11, the end of the gap
            ("2026-10-04 15:15", "+11:00"),  # Mon 02:15 +11
        ],
        id="lord_howe-gap-fixed-0215",
    ),
    pytest.param(
        cron("0 2 * * *"),
        LORD_HOWE,
        "2026-10-02 16:00",  # Sat 02:30 +10:30
        [("2026-10-03 15:30", "+11:00"), ("2026-10-04 15:00", "+11:00")],
        id="lord_howe-gap-fixed-0200",
    ),
    pytest.param(
        cron("45 1 * * *"),
        LORD_HOWE,
        "2026-04-04 13:00",  # Sun 00:00 +11
        [
            ("2026-04-04 14:45", "+11:00"),  # 01:45 +11, the first of the two 01:45s
            ("2026-04-05 15:15", "+10:30"),  # Mon 01:45 +10:30
        ],
        id="lord_howe-repeat-fixed-0145",
    ),
    pytest.param(
        cron("*/15 * * * *"),
        LORD_HOWE,
        "2026-04-04 14:20",  # 01:20 +11
        [
            ("2026-04-04 14:30", "+11:00"),  # 01:30 +11
            ("2026-04-04 14:45", "+11:00"),  # 01:45 +11
            ("2026-04-04 15:00", "+10:30"),  # 01:30 +10:30
            ("2026-04-04 15:15", "+10:30"),  # 01:45 +10:30
            ("2026-04-04 15:30", "+10:30"),  # 02:00 +10:30
        ],
        id="lord_howe-repeat-every-15-minutes",
    ),
    pytest.param(
        cron("*/15 * * * *"),
        LORD_HOWE,
        "2026-10-03 15:10",  # 01:40 +10:30
        [
            ("2026-10-03 15:15", "+10:30"),  # 01:45 +10:30
            ("2026-10-03 15:30", "+11:00"),  # 02:30 +11: 02:00 and 02:15 never happen
            ("2026-10-03 15:45", "+11:00"),
        ],
        id="lord_howe-gap-every-15-minutes",
    ),
    pytest.param(
        crontab(minute=0),
        LORD_HOWE,
        "2026-10-03 14:00",  # 00:30 +10:30
        [("2026-10-03 14:30", "+10:30"), ("2026-10-03 16:00", "+11:00")],  # 01:00, then 03:00
        id="lord_howe-gap-star-hour-minute-0",
    ),
    pytest.param(
        crontab(minute=30),
        LORD_HOWE,
        "2026-10-03 14:30",  # 01:00 +10:30
        [
            ("2026-10-03 15:00", "+10:30"),  # 01:30 +10:30
            ("2026-10-03 15:30", "+11:00"),  # 02:30 +11, the first instant after the gap
            ("2026-10-03 16:30", "+11:00"),  # 03:30 +11
        ],
        id="lord_howe-gap-star-hour-minute-30",
    ),
    pytest.param(
        crontab(minute=30),
        LORD_HOWE,
        "2026-04-04 14:00",  # 01:00 +11
        [
            ("2026-04-04 14:30", "+11:00"),  # 01:30 +11
            ("2026-04-04 15:00", "+10:30"),  # 01:30 +10:30
            ("2026-04-04 16:00", "+10:30"),  # 02:30 +10:30
        ],
        id="lord_howe-repeat-star-hour-minute-30",
    ),
    pytest.param(
        every("1h"),
        LORD_HOWE,
        "2026-04-04 13:30",  # 00:30 +11
        [
            ("2026-04-04 14:00", "+11:00"),
            ("2026-04-04 15:00", "+10:30"),
            ("2026-04-04 16:00", "+10:30"),
        ],
        id="lord_howe-repeat-every-1h",
    ),
    pytest.param(
        every("1h"),
        LORD_HOWE,
        "2026-10-03 14:10",  # 00:40 +10:30
        [("2026-10-03 15:00", "+10:30"), ("2026-10-03 16:00", "+11:00")],  # 01:30, then 03:00
        id="lord_howe-gap-every-1h",
    ),
    # -- Pacific/Apia skipped all of 2011-12-30: 23:59:59 -10 -> 2011-12-31 00:00 +14 ------
    pytest.param(
        cron("30 12 * * *"),
        ZoneInfo("Pacific/Apia"),
        "2011-12-29 00:00",  # 2011-12-28 14:00 -10
        [
            ("2011-12-29 22:30", "-10:00"),  # 29th 12:30 -10
            ("2011-12-30 10:00", "+14:00"),  # the 30th never happens: 31st 00:00 +14
            ("2011-12-30 22:30", "+14:00"),  # 31st 12:30 +14
        ],
        id="apia-skipped-day",
    ),
    # -- Asia/Shanghai (no DST): a Monday 07:30 is the Sunday before at 23:30 UTC -------------
    pytest.param(
        cron("30 7 * * mon"),
        SHANGHAI,
        "2026-03-01 00:00",  # Sun 08:00 +08
        [("2026-03-01 23:30", "+08:00"), ("2026-03-08 23:30", "+08:00")],
        id="shanghai-monday-morning",
    ),
]


@pytest.mark.parametrize(("schedule", "zone", "previous", "expected"), DST_ROWS)
def test_next_after_across_dst(schedule, zone, previous, expected) -> None:
    runs = runs_after(schedule, utc(previous).astimezone(zone), len(expected))
    assert [r.astimezone(UTC) for r in runs] == [utc(instant) for instant, _ in expected]
    for run, (_, local_offset) in zip(runs, expected, strict=True):
        assert run.tzinfo is zone, run
        assert run.utcoffset() == offset(local_offset), run


@pytest.mark.parametrize(
    ("zone", "start", "end"),
    [
        (NEW_YORK, "2026-03-07 12:00", "2026-11-02 12:00"),
        (BERLIN, "2026-03-28 12:00", "2026-10-26 12:00"),
        (LORD_HOWE, "2026-04-04 00:00", "2026-10-05 00:00"),
    ],
)
def test_every_counts_elapsed_time_across_both_changes(zone, start, end) -> None:
    schedule = every("1h")
    runs = []
    at = utc(start).astimezone(zone)
    while at < utc(end):
        at = schedule.next_after(at)
        runs.append(at)
    # subtract in UTC: Python subtracts two datetimes of one zone by their wall clocks
    instants = [r.astimezone(UTC) for r in runs]
    gaps = {(b - a).total_seconds() for a, b in zip(instants, instants[1:], strict=False)}
    assert gaps == {3600.0}
    assert len({r.utcoffset() for r in runs}) == 2  # both offsets of the zone were crossed
    assert all(r.tzinfo is zone for r in runs)


# (schedule, previous in UTC, expected runs in UTC)
CELERY_ROWS = [
    pytest.param(
        crontab(minute=0, hour="*/3"),
        "2026-01-01 01:00",
        ["2026-01-01 03:00", "2026-01-01 06:00", "2026-01-01 09:00"],
        id="every-three-hours",
    ),
    pytest.param(
        crontab(0, 0, day_of_month="2-30/2"),
        "2026-01-29 12:00",
        ["2026-01-30 00:00", "2026-02-02 00:00", "2026-02-04 00:00"],  # 31 and 1 are odd
        id="even-days-positional",
    ),
    pytest.param(
        crontab(0, 0, day_of_month="2-30/2"),
        "2026-02-28 00:00",
        ["2026-03-02 00:00"],
        id="even-days-over-february",
    ),
    pytest.param(
        crontab(minute=0, hour=9, day_of_week=7),  # 2026-01-01 is a Thursday
        "2026-01-01 00:00",
        ["2026-01-04 09:00", "2026-01-11 09:00"],
        id="day-of-week-7-is-sunday",
    ),
    pytest.param(
        crontab(minute=0, hour=9, day_of_week="7"),
        "2026-01-01 00:00",
        ["2026-01-04 09:00", "2026-01-11 09:00"],
        id="day-of-week-'7'-is-sunday",
    ),
    pytest.param(
        crontab(minute=0, hour=9, day_of_week=0),
        "2026-01-01 00:00",
        ["2026-01-04 09:00", "2026-01-11 09:00"],
        id="day-of-week-0-is-sunday",
    ),
    pytest.param(
        crontab(minute=0, hour=9, day_of_week="sun"),
        "2026-01-01 00:00",
        ["2026-01-04 09:00", "2026-01-11 09:00"],
        id="day-of-week-sun",
    ),
    pytest.param(
        crontab(minute=0, hour=9, day_of_week="5-7"),
        "2026-01-01 00:00",
        ["2026-01-02 09:00", "2026-01-03 09:00", "2026-01-04 09:00", "2026-01-09 09:00"],
        id="day-of-week-range-5-7-ends-on-sunday",
    ),
    pytest.param(
        crontab(minute=0, hour=9, day_of_week="mon-fri"),
        "2026-01-02 10:00",  # Friday, after 09:00
        ["2026-01-05 09:00", "2026-01-06 09:00"],
        id="day-of-week-mon-fri",
    ),
    pytest.param(
        crontab(minute=0, hour=9, day_of_week="sat,SUN"),
        "2026-01-01 00:00",
        ["2026-01-03 09:00", "2026-01-04 09:00", "2026-01-10 09:00"],
        id="day-of-week-names-any-case",
    ),
    pytest.param(
        crontab(minute=0, hour=9, day_of_week=[1, 3]),
        "2026-01-01 00:00",
        ["2026-01-05 09:00", "2026-01-07 09:00", "2026-01-12 09:00"],
        id="day-of-week-list",
    ),
    pytest.param(
        crontab(minute=0, hour=0, day_of_month=1, month_of_year="jan,jul"),
        "2026-01-01 00:00",
        ["2026-07-01 00:00", "2027-01-01 00:00"],
        id="month-names",
    ),
    pytest.param(
        crontab(minute=0, hour=0, day_of_month=15, month_of_year="mar-may"),
        "2026-01-01 00:00",
        ["2026-03-15 00:00", "2026-04-15 00:00", "2026-05-15 00:00", "2027-03-15 00:00"],
        id="month-name-range",
    ),
    pytest.param(
        crontab(minute=0, hour=0, day_of_month=13, day_of_week="fri"),
        "2026-01-01 00:00",
        ["2026-02-13 00:00", "2026-03-13 00:00", "2026-11-13 00:00"],
        id="kwargs-day-of-month-AND-day-of-week",
    ),
    pytest.param(
        cron("0 0 13 * fri"),
        "2026-01-01 00:00",
        ["2026-01-02 00:00", "2026-01-09 00:00", "2026-01-13 00:00", "2026-01-16 00:00"],
        id="cron-string-day-of-month-OR-day-of-week",
    ),
    pytest.param(
        cron("0 0 13 * *"),
        "2026-01-01 00:00",
        ["2026-01-13 00:00", "2026-02-13 00:00"],
        id="cron-string-day-of-month-only",
    ),
    pytest.param(
        cron("0 0 * * fri"),
        "2026-01-01 00:00",
        ["2026-01-02 00:00", "2026-01-09 00:00"],
        id="cron-string-day-of-week-only",
    ),
    pytest.param(cron("@daily"), "2026-01-01 10:00", ["2026-01-02 00:00"], id="@daily"),
    pytest.param(cron("@midnight"), "2026-01-01 10:00", ["2026-01-02 00:00"], id="@midnight"),
    pytest.param(
        cron("@hourly"), "2026-01-01 10:15", ["2026-01-01 11:00", "2026-01-01 12:00"], id="@hourly"
    ),
    pytest.param(cron("@weekly"), "2026-01-01 10:00", ["2026-01-04 00:00"], id="@weekly-sunday"),
    pytest.param(cron("@monthly"), "2026-01-01 10:00", ["2026-02-01 00:00"], id="@monthly"),
    pytest.param(cron("@yearly"), "2026-01-01 10:00", ["2027-01-01 00:00"], id="@yearly"),
    pytest.param(
        every("30s"),
        "2026-01-01 10:00:07",
        ["2026-01-01 10:00:30", "2026-01-01 10:01:00", "2026-01-01 10:01:30"],
        id="every-30s-on-the-half-minute",
    ),
    pytest.param(
        every(timedelta(minutes=7)),  # 2026-01-01 is 20454 days (2922 weeks) after the epoch
        "2026-01-01 00:00",
        ["2026-01-01 00:07", "2026-01-01 00:14"],
        id="every-7m-grid-from-the-epoch",
    ),
    pytest.param(
        every(90),
        "2026-01-01 00:00:00",
        ["2026-01-01 00:01:30", "2026-01-01 00:03:00"],
        id="every-90-seconds-as-a-number",
    ),
]


@pytest.mark.parametrize(("schedule", "previous", "expected"), CELERY_ROWS)
def test_celery_arguments(schedule, previous, expected) -> None:
    runs = runs_after(schedule, utc(previous).astimezone(ZULU), len(expected))
    assert runs == [utc(e) for e in expected]


def test_every_grid_is_the_same_in_every_zone() -> None:
    """A 30 s grid lands on :00 and :30 whatever the zone, and comes back in dt's zone."""
    previous = utc("2026-01-01 10:00:07").astimezone(KOLKATA)
    runs = runs_after(every("30s"), previous, 2)
    assert runs == [utc("2026-01-01 10:00:30"), utc("2026-01-01 10:01:00")]
    assert [r.isoformat() for r in runs] == [
        "2026-01-01T15:30:30+05:30",
        "2026-01-01T15:31:00+05:30",
    ]


def test_crontab_in_utc_and_in_shanghai_differ_by_the_offset() -> None:
    schedule = cron("30 7 * * mon")
    sunday = utc("2026-03-01 00:00")
    assert schedule.next_after(sunday) == utc("2026-03-02 07:30")  # in dt's zone, UTC
    assert schedule.next_after(sunday.astimezone(SHANGHAI)) == utc("2026-03-01 23:30")


def test_aliases_equal_their_cron_strings() -> None:
    assert cron("@daily") == cron("0 0 * * *")
    assert cron("@hourly") == cron("0 * * * *")
    assert cron("@daily") != cron("@hourly")


def test_once_runs_at_its_time_then_never() -> None:
    at = datetime(2027, 1, 1, tzinfo=SHANGHAI)  # 2026-12-31 16:00 UTC
    schedule = once(at)
    first = schedule.next_after(utc("2026-06-01 00:00"))
    assert first == utc("2026-12-31 16:00")
    assert first.tzinfo is UTC  # returned in dt's zone
    assert schedule.next_after(first) is None
    assert schedule.next_after(utc("2027-06-01 00:00")) is None
    assert schedule.next_after(first - timedelta(microseconds=1)) == first


def test_once_in_a_repeated_hour_compares_instants() -> None:
    """01:30 EDT comes before 01:10 EST, though its wall clock reads later."""
    first_0130 = utc("2026-11-01 05:30").astimezone(NEW_YORK)  # 01:30 EDT
    second_0110 = utc("2026-11-01 06:10").astimezone(NEW_YORK)  # 01:10 EST
    assert once(first_0130).next_after(second_0110) is None
    second_0130 = utc("2026-11-01 06:30").astimezone(NEW_YORK)  # 01:30 EST
    first_0145 = utc("2026-11-01 05:45").astimezone(NEW_YORK)  # 01:45 EDT
    run = once(second_0130).next_after(first_0145)
    assert run.astimezone(UTC) == utc("2026-11-01 06:30")


def test_next_after_is_strictly_after() -> None:
    on_the_minute = utc("2026-01-01 10:30")
    assert crontab(minute=30).next_after(on_the_minute) == utc("2026-01-01 11:30")
    assert cron("30 10 * * *").next_after(on_the_minute) == utc("2026-01-02 10:30")
    assert every("30m").next_after(on_the_minute) == utc("2026-01-01 11:00")


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 1, 1, 10, 0)
    for schedule in (cron("* * * * *"), every("1m")):
        with pytest.raises(ValueError, match="aware"):
            schedule.next_after(naive)


@pytest.mark.parametrize(
    ("expr", "field"),
    [
        ("61 * * * *", "minute"),
        ("-1 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day_of_month"),
        ("* * 32 * *", "day_of_month"),
        ("* * * 13 *", "month_of_year"),
        ("* * * smarch *", "month_of_year"),
        ("* * * * funday", "day_of_week"),
        ("* * * * 8", "day_of_week"),
        ("*/0 * * * *", "minute"),
        ("* */0 * * *", "hour"),
        ("5-1 * * * *", "minute"),
        ("* * * *", "5"),
        ("* * * * * *", "5"),
        ("@fortnightly", "5"),
    ],
)
def test_bad_cron_strings_name_the_field(expr: str, field: str) -> None:
    with pytest.raises(ScheduleSyntaxError, match=field) as info:
        cron(expr)
    assert isinstance(info.value, ValueError)


def test_bad_field_messages_say_what_is_valid() -> None:
    with pytest.raises(ScheduleSyntaxError) as info:
        cron("* * * * funday")
    assert str(info.value).startswith("day_of_week: 'funday' is not a number or a name (sun, mon")
    with pytest.raises(ScheduleSyntaxError, match=r"minute: 61 is out of range 0-59"):
        cron("61 * * * *")
    with pytest.raises(ScheduleSyntaxError, match=r"minute: step '0' must be a positive number"):
        cron("*/0 * * * *")
    with pytest.raises(ScheduleSyntaxError, match=r"has 4 fields; expected 5"):
        cron("* * * *")


@pytest.mark.parametrize(
    "make", [lambda: cron("0 0 30 2 *"), lambda: crontab(0, 0, "*", "31", "4,6")]
)
def test_a_crontab_on_a_day_no_chosen_month_has_is_refused(make) -> None:
    with pytest.raises(
        ScheduleSyntaxError, match="never runs: none of those months has such a day"
    ):
        make()


def test_a_day_that_only_some_chosen_months_have_still_runs_in_those() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert crontab(0, 0, "*", "31", "2,3").next_after(at) == datetime(2026, 3, 31, tzinfo=UTC)
    assert cron("0 0 29 2 *").next_after(at) == datetime(2028, 2, 29, tzinfo=UTC)
    # in cron's syntax a restricted weekday still runs the entry
    assert cron("0 0 30 2 mon").next_after(at) == datetime(2026, 2, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"minute": 60}, "minute"),
        ({"hour": "25"}, "hour"),
        ({"day_of_week": "funday"}, "day_of_week"),
        ({"day_of_month": "0-5"}, "day_of_month"),
        ({"month_of_year": 0}, "month_of_year"),
        ({"minute": "*/0"}, "minute"),
        ({"minute": 1.5}, "minute"),
    ],
)
def test_bad_crontab_arguments_name_the_field(kwargs, field: str) -> None:
    with pytest.raises(ScheduleSyntaxError, match=field):
        crontab(**kwargs)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30),
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("2d", 172800),
        ("500ms", 0.5),
        (1.5, 1.5),
    ],
)
def test_durations(text, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["10 parsecs", "", "5m30", "s", True, None])
def test_bad_durations(bad) -> None:
    with pytest.raises(ScheduleSyntaxError, match="is not a duration"):
        parse_duration(bad)


def test_every_must_be_positive() -> None:
    with pytest.raises(ScheduleSyntaxError, match="must be positive"):
        every("0s")


# -- property: next_after against a brute force over every minute of 2026 ---------------------
ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Shanghai",
    "UTC",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/St_Johns",
    "Europe/London",
    "Africa/Casablanca",
    "Asia/Tehran",
    "America/Santiago",  # changes at midnight: a day that starts at 01:00
    "America/Havana",  # likewise, in the other hemisphere
]
TABLE_START = datetime(2025, 12, 30, tzinfo=UTC)  # minute 0 of the tables
TABLE_MINUTES = (366 + 6) * 1440
LOCAL_START = date(2025, 12, 30)  # wall minute 0 is this date's 00:00
YEAR_DAYS = 365


@functools.cache
def zone_table(name: str) -> tuple[dict[int, int], dict[int, int], tuple[int, ...]]:
    """The local wall minute of every UTC minute of the table, inverted.

    Returns wall -> earliest UTC minute showing it, wall -> latest one (the same minute
    unless the wall time is repeated), and the table days (UTC) when the offset changes.
    Offsets come from zoneinfo hour by hour, minute by minute in an hour that changes.
    """
    zone = ZoneInfo(name)

    def offset_minutes(u: int) -> int:
        at = TABLE_START + timedelta(minutes=u)
        return int(at.astimezone(zone).utcoffset().total_seconds() // 60)

    walls: list[int] = []
    changes: set[int] = set()
    for hour in range(TABLE_MINUTES // 60):
        u = hour * 60
        first, last = offset_minutes(u), offset_minutes(u + 60)
        if first == last:
            walls.extend(range(u + first, u + 60 + first))
        else:
            walls.extend(u + m + offset_minutes(u + m) for m in range(60))
            changes.add(hour // 24)
    earliest = dict(zip(reversed(walls), range(len(walls) - 1, -1, -1), strict=True))
    latest = dict(zip(walls, range(len(walls)), strict=True))
    return earliest, latest, tuple(sorted(changes))


def instant(u: int) -> datetime:
    return TABLE_START + timedelta(minutes=u)


def expected_runs(
    zone_name: str,
    fields: dict[str, set[int]],
    star_hour: bool,
    day_or: bool,
    window: tuple[datetime, datetime],
) -> list[datetime]:
    """The runs in `window` by SPEC §4's rule, from the wall-time table."""
    earliest, latest, _ = zone_table(zone_name)
    start, end = window
    runs: set[int] = set()
    for d in range(YEAR_DAYS + 4):
        day = LOCAL_START + timedelta(days=d)
        if day.month not in fields["month_of_year"]:
            continue
        dom = day.day in fields["day_of_month"]
        dow = day.isoweekday() % 7 in fields["day_of_week"]
        if not ((dom or dow) if day_or else (dom and dow)):
            continue
        for hour in fields["hour"]:
            for minute in fields["minute"]:
                wall = d * 1440 + hour * 60 + minute
                if star_hour:  # every real minute that shows it: none, one or two
                    if wall in earliest:
                        runs.update((earliest[wall], latest[wall]))
                    continue
                while wall not in earliest:  # skipped: the first instant after the gap
                    wall += 1
                runs.add(earliest[wall])  # shown twice: the first time only
    return [instant(u) for u in sorted(runs) if start < instant(u) <= end]


def field_text(values: list[int] | str) -> str:
    return values if isinstance(values, str) else ",".join(map(str, values))


def values(low: int, high: int, size: int, fold_sunday: bool = False):
    """A crontab field: '*' or a list of up to `size` values, as (text, matching values)."""
    listed = st.lists(st.integers(low, high), min_size=1, max_size=size, unique=True)
    fold = (lambda v: v % 7) if fold_sunday else (lambda v: v)  # day of week 7 is Sunday
    return st.one_of(
        st.just(("*", {fold(v) for v in range(low, high + 1)})),
        listed.map(lambda vs: (field_text(vs), {fold(v) for v in vs})),
    )


def steps(options: list[int], top: int):
    """A crontab field '*/n', as (text, matching values)."""
    return st.sampled_from(options).map(
        lambda n: ("*" if n == 1 else f"*/{n}", set(range(0, top, n)))
    )


@dataclass
class CronCase:
    texts: dict[str, str]  # crontab's keyword arguments, as text
    sets: dict[str, set[int]]  # the values each field matches
    star_hour: bool

    @property
    def cron(self) -> str:
        t = self.texts
        return " ".join(
            [t["minute"], t["hour"], t["day_of_month"], t["month_of_year"], t["day_of_week"]]
        )

    @property
    def days_restricted(self) -> bool:
        return self.texts["day_of_month"] != "*" and self.texts["day_of_week"] != "*"


@st.composite
def cron_cases(draw) -> CronCase:
    """Fixed-hour and *-hour crontabs, with hours near the clock changes of most zones."""
    star_hour = draw(st.booleans())
    if star_hour:
        hour = draw(steps([1, 1, 2, 3, 5, 7], 24))
        minute = draw(st.one_of(values(0, 59, 2), steps([15, 20, 30], 60)))
    else:
        near_changes = st.sampled_from([0, 1, 2, 3, 23])
        hours = draw(
            st.lists(
                st.one_of(near_changes, st.integers(0, 23)), min_size=1, max_size=3, unique=True
            )
        )
        hour = (field_text(hours), set(hours))
        quarters = st.one_of(st.sampled_from([0, 15, 30, 45]), st.integers(0, 59))
        minutes = st.lists(quarters, min_size=1, max_size=3, unique=True)
        minute = draw(
            st.one_of(minutes.map(lambda vs: (field_text(vs), set(vs))), steps([20, 30], 60))
        )
    fields = {
        "minute": minute,
        "hour": hour,
        "day_of_month": draw(values(1, 31, 6)),
        "month_of_year": draw(values(1, 12, 8)),
        "day_of_week": draw(values(0, 7, 4, fold_sunday=True)),
    }
    return CronCase(
        texts={name: text for name, (text, _) in fields.items()},
        sets={name: matching for name, (_, matching) in fields.items()},
        star_hour=star_hour,
    )


@st.composite
def windows(draw, zone_name: str, days: int):
    """A window of `days` in 2026, often one that holds an offset change of the zone."""
    *_, changes = zone_table(zone_name)
    year_start = (datetime(2026, 1, 1, tzinfo=UTC) - TABLE_START).days
    candidates = [c - 1 for c in changes if year_start <= c - 1 <= year_start + YEAR_DAYS - days]
    first = draw(
        st.one_of(
            st.sampled_from(candidates), st.integers(year_start, year_start + YEAR_DAYS - days)
        )
        if candidates
        else st.integers(year_start, year_start + YEAR_DAYS - days)
    )
    # start anywhere within the first day, to the minute
    start = TABLE_START + timedelta(days=first, minutes=draw(st.integers(0, 1439)))
    return start, start + timedelta(days=days)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), zone_name=st.sampled_from(ZONES), case=cron_cases(), as_string=st.booleans())
def test_crontab_matches_brute_force(data, zone_name: str, case: CronCase, as_string: bool) -> None:
    day_or = as_string and case.days_restricted  # cron's OR; crontab(...) keeps Celery's AND
    if not day_or and not any(
        day <= calendar.monthrange(2028, month)[1]  # a leap year: 29 February exists
        for month in case.sets["month_of_year"]
        for day in case.sets["day_of_month"]
    ):  # e.g. 30 February: refused at once rather than never due
        with pytest.raises(ScheduleSyntaxError, match="never runs"):
            crontab.from_string(case.cron) if as_string else crontab(**case.texts)
        return
    schedule = crontab.from_string(case.cron) if as_string else crontab(**case.texts)
    window = data.draw(windows(zone_name, 10 if case.star_hour else 40), label="window")
    expected = expected_runs(zone_name, case.sets, case.star_hour, day_or, window)
    zone = ZoneInfo(zone_name)
    got = []
    at = window[0].astimezone(zone)
    while (at := schedule.next_after(at)) is not None and at <= window[1]:
        assert at.tzinfo is zone
        got.append(at.astimezone(UTC))
    assert got == expected, f"{case.cron!r} in {zone_name}, {'string' if as_string else 'kwargs'}"


# The local hours in which each zone's 2026 changes fall (both gaps and repeats).
CHANGE_HOURS = {
    "America/New_York": [1, 2],
    "Europe/Berlin": [2],
    "Australia/Lord_Howe": [1, 2],
    "Asia/Shanghai": [2],
    "UTC": [2],
    "America/Sao_Paulo": [2],
    "Asia/Kolkata": [2],
    "Pacific/Chatham": [2, 3],
    "America/St_Johns": [1, 2],
    "Europe/London": [1],
    "Africa/Casablanca": [2],
    "Asia/Tehran": [2],
    "America/Santiago": [0, 23],
    "America/Havana": [0],
}


def year_of_runs(schedule, zone: ZoneInfo) -> list[datetime]:
    runs = []
    at = YEAR[0].astimezone(zone)
    while (at := schedule.next_after(at)) <= YEAR[1]:
        assert at.tzinfo is zone
        runs.append(at.astimezone(UTC))
    return runs


YEAR = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
ANY_DAY = {
    "day_of_month": set(range(1, 32)),
    "month_of_year": set(range(1, 13)),
    "day_of_week": set(range(7)),
}


@pytest.mark.parametrize("zone_name", ZONES)
def test_whole_year_fixed_hours_match_brute_force(zone_name: str) -> None:
    """Minutes 15 and 45 of the hours where the zone's clock changes, all of 2026."""
    hours = CHANGE_HOURS[zone_name]
    schedule = cron(f"15,45 {field_text(hours)} * * *")
    sets = {**ANY_DAY, "hour": set(hours), "minute": {15, 45}}
    expected = expected_runs(zone_name, sets, False, False, YEAR)
    assert year_of_runs(schedule, ZoneInfo(zone_name)) == expected


@pytest.mark.parametrize("zone_name", ZONES)
def test_whole_year_star_hour_matches_brute_force(zone_name: str) -> None:
    """On the hour and half past every hour that really passes, all of 2026."""
    sets = {**ANY_DAY, "hour": set(range(24)), "minute": {0, 30}}
    expected = expected_runs(zone_name, sets, True, False, YEAR)
    assert year_of_runs(cron("0,30 * * * *"), ZoneInfo(zone_name)) == expected
