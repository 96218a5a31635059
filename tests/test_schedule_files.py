"""Loading schedules from YAML files and from Celery's `beat_schedule`, and refusing bad ones.

A bad file is refused whole, with `file:line: entry 'name': reason`: each error test
writes one small file and checks the file, the line of the offending key, the entry
and the reason.
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from beatq import Beatq, crontab, schedule
from beatq.beat.loader import load_all, load_file, load_python
from beatq.beat.schedules import every, once
from beatq.exceptions import ScheduleError

ROOT = Path(__file__).resolve().parent.parent
UTC = timezone.utc
REGISTERED = ["proj.tasks.add", "proj.tasks.fetch", "proj.tasks.report", "proj.tasks.sync"]


def ts(text: str) -> float:
    """The POSIX instant of a hand-written UTC time, '2026-03-08 07:00'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def write(name: str, text: str) -> str:
    """Write a file relative to the working directory (a tmp_path); lines count from 1."""
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return name


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # so messages carry the short relative path we wrote
    return tmp_path


def refusal(text: str, registered: list[str] | None = REGISTERED) -> str:
    name = write("schedules/bad.yaml", text)
    with pytest.raises(ScheduleError) as info:
        load_file(name, ZoneInfo("UTC"), registered)
    return str(info.value)


def make_app(**settings) -> Beatq:
    app = Beatq("proj", broker="redis://127.0.0.1:1/0", **settings)  # never connected

    @app.task(name="proj.tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="proj.tasks.report")
    def report(kind: str = "daily") -> str:
        return kind

    return app


# -- the style guide's example, to the letter ------------------------------------------------
def test_unknown_key_names_file_line_entry_and_suggestion() -> None:
    name = write(
        "schedules/reports.yaml",
        """
        # Reports, in the office's zone.
        timezone: Europe/Berlin

        schedules:
          weekly:
            task: proj.tasks.report
            cron: "0 8 * * mon"
            args: [weekly]

          nightly:
            task: proj.tasks.report
            args: [nightly]
            options: {queue: reports}
            evry: 1d
        """,
    )
    with pytest.raises(ScheduleError) as info:
        load_file(name, ZoneInfo("UTC"), REGISTERED)
    assert str(info.value) == (
        "schedules/reports.yaml:14: entry 'nightly': unknown key 'evry' (did you mean 'every'?)"
    )


# (file, line of the offending key, what the message says after "file:line: ")
REFUSALS = [
    pytest.param(
        """
        timezone: UTC
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h: 2
        """,
        5,
        "YAML syntax error: mapping values are not allowed here",
        id="yaml-syntax",
    ),
    pytest.param(
        "schedules:\n  nightly:\n    task: proj.tasks.add\n\tevery: 1h\n",
        4,
        "YAML syntax error: found character '\\t' that cannot start any token",
        id="yaml-tab",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            colour: red
        """,
        5,
        "entry 'nightly': unknown key 'colour'; valid keys: task, every, cron, at,",
        id="unknown-key-without-a-close-match",
    ),
    pytest.param(
        """
        timezone: UTC
        schedule:
          nightly: {task: proj.tasks.add, every: 1h}
        """,
        2,
        "unknown top-level key 'schedule' (did you mean 'schedules'?)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            args: [1, 2]
            cron: "61 * * * *"
        """,
        5,
        "entry 'nightly': cron: minute: 61 is out of range 0-59",
        id="bad-cron-minute",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            cron: "0 2 * * funday"
        """,
        4,
        "entry 'nightly': cron: day_of_week: 'funday' is not a number or a name",
        id="bad-cron-day-name",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            cron: "0 2 * *"
        """,
        4,
        "entry 'nightly': cron: cron '0 2 * *' has 4 fields; expected 5",
        id="cron-four-fields",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            cron: "0 0 30 2 *"
        """,
        4,
        "entry 'nightly': cron: crontab day_of_month '30' with month_of_year '2' never runs",
        id="cron-on-30-february",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add

            cron: {minute: 0, hour: 25}
        """,
        5,
        "entry 'nightly': cron: hour: 25 is out of range 0-23",
        id="bad-cron-field-mapping",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            cron: {minut: 0, hour: 2}
        """,
        4,
        "entry 'nightly': cron: unknown field 'minut' (did you mean 'minute'?)",
        id="unknown-cron-field",
    ),
    pytest.param(
        """
        # a zone that does not exist
        timezone: Mars/Olympus_Mons
        schedules:
          nightly: {task: proj.tasks.add, every: 1h}
        """,
        2,
        "unknown time zone 'Mars/Olympus_Mons'; use an IANA name such as 'UTC'",
        id="unknown-zone-in-file",
    ),
    pytest.param(
        """
        timezone: Europe/Berlin
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            timezone: Europe/Berln
        """,
        6,
        "entry 'nightly': unknown time zone 'Europe/Berln'; use an IANA name",
        id="unknown-zone-in-entry",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            every: 1h
            task: proj.tasks.synk
        """,
        4,
        "entry 'nightly': names task 'proj.tasks.synk', which is not registered "
        "(did you mean 'proj.tasks.sync'?); registered: proj.tasks.add, proj.tasks.fetch,",
        id="unknown-task",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            args: [1, 2]
            every: 1h
        """,
        2,
        "entry 'nightly': needs 'task': the registered name of the task to run",
        id="no-task",
    ),
    pytest.param(
        """
        schedules:
          other: {task: proj.tasks.add, every: 1h}
          nightly:
            task: proj.tasks.add
            args: [1, 2]
        """,
        3,
        "entry 'nightly': needs exactly one of 'every', 'cron' or 'at'",
        id="none-of-every-cron-at",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            cron: "0 2 * * *"
        """,
        5,
        "entry 'nightly': needs exactly one of 'every', 'cron' or 'at' (has every, cron)",
        id="every-and-cron",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            args: [1, 2]
            at: "2027-01-01T00:00:00"
        """,
        6,
        "entry 'nightly': needs exactly one of 'every', 'cron' or 'at' (has every, at)",
        id="every-and-at",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 10 parsecs
        """,
        4,
        "entry 'nightly': every: '10 parsecs' is not a duration; use seconds or units",
        id="bad-every-duration",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 0s
        """,
        4,
        "entry 'nightly': every: interval '0s' must be positive",
        id="zero-interval",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            jitter: soon
        """,
        5,
        "entry 'nightly': jitter: 'soon' is not a duration",
        id="bad-jitter",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            catchup: all
            catchup_window: forever
        """,
        6,
        "entry 'nightly': catchup_window: 'forever' is not a duration",
        id="bad-catchup-window",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            catchup: sometimes
        """,
        5,
        "entry 'nightly': catchup 'sometimes' is not one of: skip, latest, all",
        id="bad-catchup",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            overlap: maybe
        """,
        5,
        "entry 'nightly': overlap 'maybe' is not one of: allow, skip",
        id="bad-overlap",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            args: 16
        """,
        5,
        "entry 'nightly': 'args' must be a list, not int",
        id="args-not-a-list",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            args: "16, 16"
        """,
        5,
        "entry 'nightly': 'args' must be a list, not str",
        id="args-a-string",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            kwargs: [1, 2]
        """,
        5,
        "entry 'nightly': 'kwargs' must be a mapping, not list",
        id="kwargs-not-a-mapping",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            options: high
        """,
        5,
        "entry 'nightly': 'options' must be a mapping, not str",
        id="options-not-a-mapping",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            enabled: "yes"
        """,
        5,
        "entry 'nightly': 'enabled' must be true or false, not 'yes'",
        id="enabled-not-a-bool",
    ),
    pytest.param(
        """
        schedules:
          new-year:
            task: proj.tasks.add
            at: next tuesday
        """,
        4,
        "entry 'new-year': at: 'next tuesday' is not an ISO 8601 time",
        id="bad-at",
    ),
    pytest.param(
        """
        schedules:
          nightly: every day at two
        """,
        2,
        "entry 'nightly': must be a mapping with 'task' and 'every', 'cron' or 'at'",
        id="entry-not-a-mapping",
    ),
    pytest.param(
        """
        timezone: UTC
        schedules:
          - {task: proj.tasks.add, every: 1h}
        """,
        2,
        "'schedules' must be a mapping of entries",
        id="schedules-a-list",
    ),
    pytest.param(
        """
        - {task: proj.tasks.add, every: 1h}
        """,
        1,
        "expected a mapping with 'schedules:'",
        id="file-a-list",
    ),
    pytest.param(
        """
        schedules:
          nightly: {task: proj.tasks.add, every: 1h}
          hourly: {task: proj.tasks.add, every: 1h}

          nightly: {task: proj.tasks.report, every: 1d}
        """,
        5,
        "entry 'nightly' is defined twice (also at line 2)",
        id="entry-twice-in-one-file",
    ),
    pytest.param(
        """
        schedules:
          nightly:
            task: proj.tasks.add
            every: 1h
            task: proj.tasks.report
        """,
        5,
        "entry 'nightly': key 'task' is defined twice (also at line 3)",
        id="key-twice-in-one-entry",
    ),
    pytest.param(
        """
        schedules:
          nightly: {task: proj.tasks.add, every: 1h}
        timezone: UTC
        schedules:
          hourly: {task: proj.tasks.add, every: 1h}
        """,
        4,
        "top-level key 'schedules' is defined twice (also at line 1)",
        id="schedules-twice",
    ),
]


@pytest.mark.parametrize(("text", "line", "reason"), REFUSALS)
def test_bad_file_is_refused_with_file_line_entry_and_reason(
    text: str, line: int, reason: str
) -> None:
    message = refusal(text)
    assert message.startswith(f"schedules/bad.yaml:{line}: {reason}"), message


def test_unknown_task_is_only_checked_against_a_registered_list() -> None:
    text = "schedules:\n  nightly: {task: proj.tasks.synk, every: 1h}\n"
    name = write("schedules/lenient.yaml", text)
    assert load_file(name, ZoneInfo("UTC"), None)["nightly"].task == "proj.tasks.synk"
    with pytest.raises(ScheduleError, match=r"^schedules/lenient.yaml:2: entry 'nightly': names"):
        load_file(name, ZoneInfo("UTC"), REGISTERED)


def test_missing_file_is_refused() -> None:
    with pytest.raises(ScheduleError, match=r"^schedules/none.yaml: cannot read: No such file"):
        load_file("schedules/none.yaml", ZoneInfo("UTC"))


def test_empty_file_has_no_entries() -> None:
    assert load_file(write("schedules/empty.yaml", "# nothing yet\n"), ZoneInfo("UTC")) == {}
    assert load_file(write("schedules/none.yaml", "schedules:\n"), ZoneInfo("UTC")) == {}


def test_entry_defined_in_two_files_is_refused() -> None:
    first = write(
        "schedules/a.yaml",
        """
        schedules:
          nightly: {task: proj.tasks.add, every: 1h}
        """,
    )
    second = write(
        "schedules/b.yaml",
        """
        timezone: UTC
        schedules:
          hourly: {task: proj.tasks.add, every: 1h}
          nightly: {task: proj.tasks.report, cron: "0 2 * * *"}
        """,
    )
    with pytest.raises(ScheduleError) as info:
        load_all(make_app(), [first, second])
    assert str(info.value) == (
        "schedules/b.yaml:4: entry 'nightly' is defined twice (also at schedules/a.yaml:2)"
    )


def test_entry_defined_in_python_and_in_a_file_is_refused() -> None:
    app = make_app()
    app.conf.beat_schedule = {"nightly": {"task": "proj.tasks.add", "schedule": 3600}}
    name = write("schedules/a.yaml", "schedules:\n  nightly: {task: proj.tasks.add, every: 1h}\n")
    with pytest.raises(ScheduleError) as info:
        load_all(app, [name])
    assert (
        str(info.value) == "schedules/a.yaml:2: entry 'nightly' is defined twice (also at python)"
    )


def test_load_all_checks_tasks_against_the_app() -> None:
    name = write("schedules/a.yaml", "schedules:\n  nightly: {task: proj.tasks.ad, every: 1h}\n")
    with pytest.raises(ScheduleError, match=r"did you mean 'proj.tasks.add'\?"):
        load_all(make_app(), [name])
    assert load_all(make_app(), [name], check_tasks=False)["nightly"].task == "proj.tasks.ad"


# -- a good file -------------------------------------------------------------------------------
GOOD = """
timezone: Asia/Shanghai            # default for this file's entries
schedules:
  add-every-30-seconds: {task: proj.tasks.add, every: 30s, args: [16, 16]}
  add-every-monday-morning:
    task: proj.tasks.add
    cron: "30 7 * * mon"
    args: [16, 16]
    options: {queue: priority.high, expires: 600}
    catchup: all
    catchup_window: 2h
    overlap: skip
    jitter: 5s
    enabled: false
  monday-by-fields:
    task: proj.tasks.add
    cron: {minute: 30, hour: 7, day_of_week: 1}
    kwargs: {x: 1, y: 2}
  nightly-new-york:
    task: proj.tasks.fetch
    cron: "0 2 * * *"
    timezone: America/New_York
  new-year: {task: proj.tasks.report, at: "2027-01-01T00:00:00"}
  new-year-unquoted: {task: proj.tasks.report, at: 2027-01-01 00:00:00}
  new-year-in-utc: {task: proj.tasks.report, at: "2027-01-01T00:00:00+00:00"}
  on: {task: proj.tasks.report, every: 1d}
"""


def test_good_file_loads_every_entry() -> None:
    name = write("schedules/good.yaml", GOOD)
    entries = load_file(name, ZoneInfo("UTC"), REGISTERED)
    assert list(entries) == [
        "add-every-30-seconds",
        "add-every-monday-morning",
        "monday-by-fields",
        "nightly-new-york",
        "new-year",
        "new-year-unquoted",
        "new-year-in-utc",
        "on",  # named as written, though YAML reads a bare `on` as true
    ]
    zones = {n: str(e.zone) for n, e in entries.items()}
    assert zones.pop("nightly-new-york") == "America/New_York"
    assert set(zones.values()) == {"Asia/Shanghai"}

    every30 = entries["add-every-30-seconds"]
    assert every30.schedule == every("30s")
    assert (every30.args, every30.kwargs, every30.options) == ([16, 16], {}, {})
    assert (every30.catchup, every30.overlap, every30.enabled) == ("latest", "allow", True)
    assert (every30.jitter, every30.catchup_window) == (timedelta(0), timedelta(hours=1))
    assert every30.source == "schedules/good.yaml:3"
    assert every30.next_after(ts("2026-01-01 10:00:07")) == ts("2026-01-01 10:00:30")

    monday = entries["add-every-monday-morning"]
    assert monday.args == [16, 16]
    assert monday.options == {"queue": "priority.high", "expires": 600}
    assert (monday.catchup, monday.catchup_window) == ("all", timedelta(hours=2))
    assert (monday.overlap, monday.jitter, monday.enabled) == ("skip", timedelta(seconds=5), False)
    assert monday.source == "schedules/good.yaml:4"
    # Monday 07:30 in Shanghai is Sunday 23:30 UTC (2026-03-01 is a Sunday)
    assert monday.next_after(ts("2026-03-01 00:00")) == ts("2026-03-01 23:30")

    by_fields = entries["monday-by-fields"]
    assert by_fields.kwargs == {"x": 1, "y": 2}
    assert by_fields.next_after(ts("2026-03-01 00:00")) == ts("2026-03-01 23:30")
    assert by_fields.next_after(ts("2026-03-01 23:30")) == ts("2026-03-08 23:30")

    # 02:00 in New York is skipped on 2026-03-08: the run is at 03:00 EDT, 07:00 UTC
    nightly = entries["nightly-new-york"]
    assert nightly.next_after(ts("2026-03-07 12:00")) == ts("2026-03-08 07:00")
    assert nightly.next_after(ts("2026-03-08 07:00")) == ts("2026-03-09 06:00")

    # a naive `at` is read in the file's zone: midnight in Shanghai is 16:00 UTC the day before
    for key in ("new-year", "new-year-unquoted"):
        assert entries[key].next_after(ts("2026-06-01 00:00")) == ts("2026-12-31 16:00"), key
        assert entries[key].next_after(ts("2026-12-31 16:00")) is None, key
    assert entries["new-year-in-utc"].next_after(ts("2026-06-01 00:00")) == ts("2027-01-01 00:00")
    assert entries["on"].task == "proj.tasks.report"


def test_file_without_a_zone_uses_the_zone_it_is_given() -> None:
    name = write(
        "schedules/plain.yaml",
        'schedules:\n  nightly: {task: proj.tasks.add, cron: "30 2 * * *"}\n',
    )
    entry = load_file(name, ZoneInfo("Europe/Berlin"))["nightly"]
    assert str(entry.zone) == "Europe/Berlin"
    # 02:30 is skipped in Berlin on 2026-03-29: 03:00 CEST is 01:00 UTC
    assert entry.next_after(ts("2026-03-28 12:00")) == ts("2026-03-29 01:00")


def test_yaml_merge_keys_share_settings_between_entries() -> None:
    name = write(
        "schedules/merge.yaml",
        """
        schedules:
          base: &base {task: proj.tasks.add, every: 1h, catchup: all, args: [1, 2]}
          faster:
            <<: *base
            every: 10m
        """,
    )
    entries = load_file(name, ZoneInfo("UTC"), REGISTERED)
    faster = entries["faster"]
    assert (faster.task, faster.catchup, faster.args) == ("proj.tasks.add", "all", [1, 2])
    assert faster.schedule == every("10m")
    assert entries["base"].schedule == every("1h")


def test_the_example_project_schedule_loads() -> None:
    entries = load_file(ROOT / "schedules" / "example.yaml", ZoneInfo("UTC"))
    assert list(entries) == [
        "add-every-10-seconds",
        "add-every-monday-morning",
        "sum-every-minute",
        "nightly-fetch-new-york",
        "new-year",
    ]
    assert str(entries["add-every-monday-morning"].zone) == "Asia/Shanghai"
    nightly = entries["nightly-fetch-new-york"]
    assert str(nightly.zone) == "America/New_York"
    assert nightly.jitter == timedelta(seconds=30)
    assert nightly.options == {"queue": "priority.high"}
    # as its comment says: on spring-forward day at 03:00 (EDT, 07:00 UTC)
    assert nightly.next_after(ts("2026-03-07 12:00")) == ts("2026-03-08 07:00")
    assert entries["sum-every-minute"].next_after(ts("2026-01-01 10:00:30")) == ts(
        "2026-01-01 10:01"
    )


# -- Python: Celery's beat_schedule ------------------------------------------------------------
def test_python_beat_schedule_in_celerys_shape() -> None:
    app = make_app(timezone="Asia/Shanghai")
    app.conf.beat_schedule = {
        "add-every-30-seconds": {
            "task": "proj.tasks.add",
            "schedule": timedelta(seconds=30),
            "args": (16, 16),
        },
        "add-every-monday-morning": {
            "task": "proj.tasks.add",
            "schedule": crontab(hour=7, minute=30, day_of_week=1),
            "args": (16, 16),
        },
        "every-ten-seconds": {"task": "proj.tasks.add", "schedule": 10.0, "args": (1, 2)},
        "every-five-minutes": {
            "task": "proj.tasks.report",
            "schedule": schedule(run_every=timedelta(minutes=5)),
            "relative": False,
        },
        "new-year": {"task": "proj.tasks.report", "schedule": datetime(2027, 1, 1)},
        "nightly-with-extras": {
            "task": "proj.tasks.report",
            "schedule": crontab(minute=0, hour=2),
            "kwargs": {"kind": "nightly"},
            "options": {"queue": "reports", "expires": 600},
            "timezone": "America/New_York",
            "catchup": "all",
            "catchup_window": timedelta(hours=6),
            "overlap": "skip",
            "jitter": "30s",
            "enabled": False,
        },
        "every-as-in-yaml": {"task": "proj.tasks.add", "every": "1h", "args": [3, 4]},
    }
    entries = load_python(app)
    assert list(entries) == list(app.conf.beat_schedule)
    assert {e.source for e in entries.values()} == {"python"}

    every30 = entries["add-every-30-seconds"]
    assert every30.schedule == every(timedelta(seconds=30))
    assert every30.args == [16, 16]
    assert every30.next_after(ts("2026-01-01 10:00:07")) == ts("2026-01-01 10:00:30")

    monday = entries["add-every-monday-morning"]
    assert str(monday.zone) == "Asia/Shanghai"  # the app's zone
    assert monday.next_after(ts("2026-03-01 00:00")) == ts("2026-03-01 23:30")

    assert entries["every-ten-seconds"].schedule == every("10s")
    assert entries["every-five-minutes"].schedule == every("5m")
    assert entries["every-as-in-yaml"].schedule == every("1h")
    assert entries["every-as-in-yaml"].args == [3, 4]

    new_year = entries["new-year"]  # naive: read in the app's zone
    assert new_year.schedule == once(datetime(2027, 1, 1, tzinfo=ZoneInfo("Asia/Shanghai")))
    assert new_year.next_after(ts("2026-06-01 00:00")) == ts("2026-12-31 16:00")

    extras = entries["nightly-with-extras"]
    assert str(extras.zone) == "America/New_York"
    assert extras.kwargs == {"kind": "nightly"}
    assert extras.options == {"queue": "reports", "expires": 600}
    assert (extras.catchup, extras.catchup_window) == ("all", timedelta(hours=6))
    assert (extras.overlap, extras.jitter, extras.enabled) == ("skip", timedelta(seconds=30), False)
    assert extras.next_after(ts("2026-03-07 12:00")) == ts("2026-03-08 07:00")  # 03:00 EDT


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (
            {"task": "proj.tasks.add", "shedule": 30},
            "unknown key 'shedule' (did you mean 'schedule'?)",
        ),
        (
            {"task": "proj.tasks.ad", "schedule": 30},
            "names task 'proj.tasks.ad', which is not registered (did you mean 'proj.tasks.add'?)"
            "; registered: proj.tasks.add, proj.tasks.report",
        ),
        ({"task": "proj.tasks.add", "schedule": "soon"}, "schedule: 'soon' is not a duration"),
        ({"task": "proj.tasks.add", "schedule": 30, "args": 16}, "'args' must be a list, not int"),
        (
            {"task": "proj.tasks.add", "schedule": 30, "overlap": "never"},
            "overlap 'never' is not one of: allow, skip",
        ),
        (
            {"task": "proj.tasks.add", "schedule": 30, "timezone": "Mars/Olympus_Mons"},
            "unknown time zone 'Mars/Olympus_Mons'",
        ),
        ("proj.tasks.add", "must be a dict with 'task' and 'schedule'"),
    ],
)
def test_bad_python_entry_is_refused_with_its_name(spec, reason: str) -> None:
    app = make_app()
    app.conf.beat_schedule = {"ok": {"task": "proj.tasks.add", "schedule": 60}, "nightly": spec}
    with pytest.raises(ScheduleError) as info:
        load_python(app)
    assert str(info.value).startswith(f"beat_schedule['nightly']: {reason}"), str(info.value)
