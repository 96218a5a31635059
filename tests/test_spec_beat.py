"""SPEC §8 promises of the schedule file that no other test pins down, on a real beat.

- `enabled: false`: the entry is loaded and shown, never dispatched.
- `at:` a one-off time: dispatched once, for that instant, never again.
- `options: {queue: ..., expires: 600}` reach the message each run sends.
- `schedule check` prints each entry's next runs in its zone and in UTC: two columns
  that name one instant (a UTC file would print the same time twice and prove nothing).
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import yaml

from tests.conftest import scaled, stored_messages, wait_for
from tests.test_beat_e2e import OUT, cli, sent, show, slots, tick, write_schedule
from tests.test_beat_e2e import start_beat as start_beat_fixture

start_beat = start_beat_fixture  # the fixture that starts `beatq beat` processes
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.backends("redis", "sqlite")
def test_a_disabled_entry_never_runs_a_one_off_runs_once_and_options_reach_the_message(
    app, tmp_path, start_beat
):
    once_at = math.ceil(time.time() + scaled(3))  # a whole second, past the beat's start
    at_text = datetime.fromtimestamp(once_at, SHANGHAI).replace(tzinfo=None).isoformat()
    entries = {
        "on": tick(),
        "off": tick(enabled=False),
        "once": {
            "task": "tests.proj.tasks.add",
            "at": at_text,  # naive: read in the file's zone, Asia/Shanghai
            "args": [5, 5],
            "options": {"queue": OUT, "expires": 600},
        },
    }
    start_beat(write_schedule(tmp_path / "s.yaml", entries, zone="Asia/Shanghai"))
    assert time.time() < once_at, "the beat started after the one-off's time: proves nothing"
    wait_for(lambda: slots(app, "once"), scaled(4) + 5, "the one-off run")
    seen = max(slots(app, "on"))
    wait_for(lambda: max(slots(app, "on")) >= seen + 2, 5, "two more runs of the others")

    assert slots(app, "off") == [], "a disabled entry is never dispatched"
    assert slots(app, "once") == [float(once_at)], "the one-off: once, for its instant"
    ((_, _, message),) = [item for item in sent(app) if item[0] == "once"]
    assert list(message.args) == [5, 5]
    assert message.expires is not None
    assert abs(message.expires - (once_at + 600)) < scaled(2), "expires: 600 s after its run"
    assert [m.queue for m in stored_messages(app) if m.id == message.id] == [OUT]


ROW = re.compile(r"^    (\S+ \S+)   (\S+ \S+)$", re.M)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.backends("memory")
def test_schedule_check_prints_each_run_in_the_entrys_zone_and_in_utc(env, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "timezone: Asia/Shanghai\n"
        "schedules:\n"
        '  morning: {task: tests.proj.tasks.add, cron: "30 7 * * mon", args: [16, 16]}\n'
        '  new-year: {task: tests.proj.tasks.add, at: "2099-01-01T00:00:00"}\n'
        "  off: {task: tests.proj.tasks.add, every: 30s, enabled: false}\n"
    )
    before = datetime.now(timezone.utc)
    proc = cli(env, "schedule", "check", str(path), "-n", "2")
    assert proc.returncode == 0, show(proc)
    blocks = dict(re.findall(r"^(\S.*?): .*\n((?:    .*\n)+)", proc.stdout, re.M))
    assert set(blocks) == {"morning", "new-year", "off (disabled)"}, show(proc)

    morning = [tuple(map(_instant, row)) for row in ROW.findall(blocks["morning"])]
    assert len(morning) == 2, show(proc)
    for local, utc in morning:
        assert local == utc, "both columns name one instant"
        assert local.utcoffset() == timedelta(hours=8) and utc.utcoffset() == timedelta(0)
        assert (local.weekday(), local.hour, local.minute) == (0, 7, 30)
        assert (utc.weekday(), utc.hour, utc.minute) == (6, 23, 30), "Sunday 23:30 in UTC"
    assert before < morning[0][0] <= before + timedelta(days=7)
    assert morning[1][0] - morning[0][0] == timedelta(days=7)

    assert blocks["new-year"].splitlines() == [
        "    2099-01-01 00:00:00.000+08:00   2098-12-31 16:00:00.000+00:00",
        "    no more runs",
    ]


ISO_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?([+-]\d\d:\d\d|Z)?")


@pytest.mark.backends("redis")
def test_the_beat_logs_every_time_in_the_app_zone_with_its_offset(app, env, tmp_path, start_beat):
    """SPEC §4: `timezone` is the zone of every time printed in logs: the beat's stamps
    and the times its lines name (a run's slot, its next run) alike."""
    from tests.test_cli import assert_log_times

    env["BEATQ_TEST_TIMEZONE"] = "Asia/Shanghai"  # the beat's environment (start_beat's env)
    # a file without a zone: its entries are in the app's; one with a zone of its own is
    # logged in the app's too, its own wall clock beside
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"schedules": {"tick": tick(), "own": tick(timezone="UTC")}}))
    beat = start_beat(path, "-l", "debug")
    wait_for(lambda: len(slots(app, "tick")) >= 2, 5, "two runs")
    wait_for(lambda: slots(app, "own"), 5, "a run of the entry with a zone of its own")
    log = beat.log()
    assert "INFO" in assert_log_times(log, "Asia/Shanghai", "+08:00")
    named = [m for line in log.splitlines() for m in ISO_TIME.finditer(line.split("] ", 1)[-1])]
    assert named, f"the beat's lines name no time at all:\n{log}"
    assert {m.group(1) for m in named} == {"+08:00"}, f"times not in +08:00:\n{log}"
    own = re.search(r"for entry 'own', run of (\S+ \S+) \((\d\d:\d\d:\d\d) UTC\)", log)
    assert own, f"the entry in UTC is not logged with its own clock:\n{log}"
    instant = datetime.fromisoformat(own.group(1))
    assert instant.utcoffset() == timedelta(hours=8)
    assert instant.astimezone(timezone.utc).strftime("%H:%M:%S") == own.group(2)
