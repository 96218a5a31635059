"""Celery's schedule protocol on beatq's schedules (issue 22): tables, as test_schedules.py.

Full weekday and month names (Celery's periodic-tasks table writes "sunday"),
`crontab_parser`, crontab equality by meaning, `is_due(last_run_at) -> (due, next)` and
`remaining_estimate(last_run_at)` with an injected clock (`nowfun=`, as Celery's), and
`schedule(run_every=...)`. `solar` is refused until beatq computes it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from beatq import schedule as top_level_schedule
from beatq.schedules import (
    ParseException,
    crontab,
    crontab_parser,
    every,
    schedstate,
    schedule,
    solar,
)

UTC = timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def clock(at: datetime):
    return lambda: at


# -- names ----------------------------------------------------------------------------------
NAME_ROWS = [
    # (field, spec, values)
    ("day_of_week", "sunday", {0}),
    ("day_of_week", "thursday", {4}),
    ("day_of_week", "Saturday", {6}),
    ("day_of_week", "monday-friday", {1, 2, 3, 4, 5}),
    ("day_of_week", "sun,thursday", {0, 4}),
    ("day_of_week", "tues,thurs", {2, 4}),
    ("day_of_week", "fri-sunday", None),  # backwards: refused below
    ("month_of_year", "january", {1}),
    ("month_of_year", "sept-december", {9, 10, 11, 12}),
]


@pytest.mark.parametrize(("field", "spec", "values"), NAME_ROWS)
def test_full_day_and_month_names(field, spec, values) -> None:
    if values is None:
        with pytest.raises(ValueError, match="backwards"):
            crontab(**{field: spec})
        return
    made = crontab(**{field: spec})
    got = made.days_of_week if field == "day_of_week" else made.months
    assert set(got) == values


def test_a_sunday_crontab_runs_on_sunday() -> None:
    # 2026-12-07 is a Monday: the next Sunday 09:00 is the 13th.
    at = crontab(minute=0, hour=9, day_of_week="sunday").next_after(utc("2026-12-07 00:00"))
    assert at == utc("2026-12-13 09:00")
    assert crontab(minute=0, hour=9, day_of_week="thursday").next_after(
        utc("2026-12-07 00:00")
    ) == utc("2026-12-10 09:00")


def test_a_misspelt_name_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'sundy' is not a number or a name \(sun, mon"):
        crontab(day_of_week="sundy")


# -- crontab_parser ---------------------------------------------------------------------------
PARSER_ROWS = [
    # (max_, min_, spec, values): Celery's fields, then one of no field
    (60, 0, "*/15", {0, 15, 30, 45}),
    (60, 0, "1,13,30-45/5,50-59/4", {1, 13, 30, 35, 40, 45, 50, 54, 58}),
    (24, 0, "0,8-17/2", {0, 8, 10, 12, 14, 16}),
    (24, 0, "*", set(range(24))),
    (7, 0, "mon-fri", {1, 2, 3, 4, 5}),
    (7, 0, "sunday", {0}),
    (31, 1, "*/10", {1, 11, 21, 31}),
    (12, 1, "*/3", {1, 4, 7, 10}),
    (12, 1, "jan,march", {1, 3}),
    (10, 5, "*", set(range(5, 15))),
]


@pytest.mark.parametrize(("max_", "min_", "spec", "values"), PARSER_ROWS)
def test_crontab_parser(max_, min_, spec, values) -> None:
    assert crontab_parser(max_, min_).parse(spec) == values


@pytest.mark.parametrize(
    ("max_", "min_", "spec", "says"),
    [
        (60, 0, "60", "60 is out of range 0-59"),
        (24, 0, "5-3", "backwards"),
        (60, 0, "x", "'x' is not a number"),
        (31, 1, "0", "0 is out of range 1-31"),
        (10, 5, "15", "15 is out of range 5-14"),
        (60, 0, "*/0", "positive"),
    ],
)
def test_crontab_parser_refuses_naming_the_part(max_, min_, spec, says) -> None:
    with pytest.raises(ParseException, match=says) as caught:
        crontab_parser(max_, min_).parse(spec)
    assert isinstance(caught.value, ValueError), "Celery raises ValueError out of range"


# -- equality by meaning ----------------------------------------------------------------------
EQUAL = [
    (crontab(minute="1,2"), crontab(minute="1-2")),
    (crontab(minute="*/15"), crontab(minute="0,15,30,45")),
    (crontab(minute=[0, 30]), crontab(minute="0,30")),
    (crontab(day_of_week="sun"), crontab(day_of_week="sunday")),
    (crontab(day_of_week=0), crontab(day_of_week="7")),
    (crontab(hour=7, minute=30, day_of_week="mon"), crontab.from_string("30 7 * * 1")),
    (crontab(month_of_year="1-3"), crontab(month_of_year="jan,february,3")),
]
DIFFERENT = [
    (crontab(minute="1"), crontab(minute="2")),
    # "*" follows the clock across a daylight-saving change, "0-23" runs once a day each
    (crontab(minute=0, hour="*"), crontab(minute=0, hour="0-23")),
    # cron syntax ORs a restricted day of month and day of week; keywords AND them
    (crontab.from_string("0 0 1 * mon"), crontab(0, 0, day_of_week="mon", day_of_month=1)),
]


@pytest.mark.parametrize(("one", "other"), EQUAL, ids=[f"{a} == {b}" for a, b in EQUAL])
def test_crontabs_that_run_at_the_same_times_are_equal(one, other) -> None:
    assert one == other
    assert hash(one) == hash(other)
    assert len({one, other}) == 1


@pytest.mark.parametrize(("one", "other"), DIFFERENT, ids=[f"{a} != {b}" for a, b in DIFFERENT])
def test_crontabs_that_run_at_other_times_differ(one, other) -> None:
    assert one != other


# -- is_due and remaining_estimate ------------------------------------------------------------
SEVEN = dict(minute=0, hour=7)
DUE_ROWS = [
    # (schedule kwargs, now, last run, remaining seconds, is_due)
    # not yet: the 07:00 after yesterday's run is 30 s away; ask again then
    ("crontab", SEVEN, "2026-12-07 06:59:30", "2026-12-06 07:00", 30, (False, 30)),
    # due 10 s ago: run now, ask again at tomorrow's 07:00
    ("crontab", SEVEN, "2026-12-07 07:00:10", "2026-12-06 07:00", -10, (True, 86390)),
    # overdue by a day (the beat was down): due, and the next check is the next slot
    ("crontab", SEVEN, "2026-12-08 12:00", "2026-12-06 07:00", -(29 * 3600), (True, 68400)),
    # it ran at 07:00 today: not due until tomorrow
    ("crontab", SEVEN, "2026-12-07 07:00:05", "2026-12-07 07:00", 86395, (False, 86395)),
    # every 30 s on the grid: Celery's "last_run_at + run_every - now"
    ("every", {"interval": 30}, "2026-12-07 00:00:20", "2026-12-07 00:00:00", 10, (False, 10)),
    # Celery's documented example: due, next check in 20 s
    ("every", {"interval": 30}, "2026-12-07 00:00:40", "2026-12-07 00:00:00", -10, (True, 20)),
    ("every", {"interval": 30}, "2026-12-07 00:00:30", "2026-12-07 00:00:00", 0, (True, 30)),
    # a last run between slots: due at the next slot of the grid, as beatq's beat runs it
    ("every", {"interval": 30}, "2026-12-07 00:00:31", "2026-12-07 00:00:10", -1, (True, 29)),
]


def make(kind: str, kwargs: dict, now: datetime):
    if kind == "crontab":
        return crontab(**kwargs, nowfun=clock(now))
    return every(kwargs["interval"], nowfun=clock(now))


@pytest.mark.parametrize(("kind", "kwargs", "now", "last", "remaining", "due"), DUE_ROWS)
def test_is_due_and_remaining_estimate(kind, kwargs, now, last, remaining, due) -> None:
    sched = make(kind, kwargs, utc(now))
    assert sched.remaining_estimate(utc(last)) == timedelta(seconds=remaining)
    state = sched.is_due(utc(last))
    assert isinstance(state, schedstate)
    assert state == due
    assert (state.is_due, state.next) == due


def test_a_crontab_is_read_in_the_zone_of_its_clock_or_of_its_app() -> None:
    """07:00 in Shanghai is 23:00 UTC the day before; a naive last run is read there too."""
    now = utc("2026-12-06 22:59:00")
    in_shanghai = crontab(**SEVEN, nowfun=clock(now.astimezone(SHANGHAI)))
    assert in_shanghai.remaining_estimate(utc("2026-12-05 23:00")) == timedelta(seconds=60)
    assert in_shanghai.remaining_estimate(datetime(2026, 12, 6, 7, 0)) == timedelta(seconds=60)

    app = SimpleNamespace(timezone=SHANGHAI)
    on_app = crontab(**SEVEN, nowfun=lambda: now.replace(tzinfo=None) + timedelta(hours=8), app=app)
    assert on_app.is_due(datetime(2026, 12, 6, 7, 0)) == (False, 60)
    assert on_app.tz == SHANGHAI

    in_utc = crontab(**SEVEN, nowfun=clock(now))
    assert in_utc.remaining_estimate(utc("2026-12-06 07:00")) == timedelta(hours=8, minutes=1)


def test_without_nowfun_the_real_clock_is_used() -> None:
    every_minute = crontab(minute="*")
    state = every_minute.is_due(datetime.now(UTC) - timedelta(minutes=2))
    assert state.is_due and 0 < state.next <= 60
    assert every_minute.now().tzinfo is not None
    assert not every(3600).is_due(datetime.now(UTC) + timedelta(hours=2)).is_due


# -- schedule(run_every=...) and solar ---------------------------------------------------------
def test_schedule_takes_celery_arguments() -> None:
    now = utc("2026-12-07 00:00:50")
    sched = schedule(run_every=timedelta(seconds=30), nowfun=clock(now))
    assert sched.run_every == timedelta(seconds=30) and sched.seconds == 30
    assert sched == every(30) == top_level_schedule(30.0)
    assert sched.is_due(utc("2026-12-07 00:00:00")) == (True, 10)
    assert schedule(run_every=90, relative=True).run_every == timedelta(seconds=90)
    with pytest.raises(ValueError, match="needs run_every"):
        schedule()


def test_solar_is_refused_loudly_not_stubbed() -> None:
    with pytest.raises(NotImplementedError, match="solar.*not supported by beatq yet"):
        solar("sunrise", -33.87, 151.21)


def test_crontab_refuses_an_argument_it_does_not_know():
    with pytest.raises(TypeError, match=r"unknown argument\(s\) minutes; it takes minute, hour"):
        crontab(minutes=5)
