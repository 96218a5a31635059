"""The beat's per-entry record (beat/record.py): read whole from what the previous version
wrote, tolerant of anything else, and the same bytes however it is written.

The upgrade test runs a real `beatq beat` on a store that a beat of the previous version
left behind: the entry's last run is neither repeated nor lost, and `schedule list` and
the dashboard show it before the new beat has run anything.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from beatq.beat.record import EntryRecord
from beatq.dashboard.api import Dashboard
from beatq.timezones import format_time
from tests.conftest import wait_for
from tests.test_beat_e2e import (
    BOTH,
    assert_each_slot_once,
    cli,
    entry_info,
    show,
    slots,
    tick,
    write_schedule,
)
from tests.test_beat_e2e import start_beat as start_beat_fixture

start_beat = start_beat_fixture  # the fixture that starts `beatq beat` processes

UTC = ZoneInfo("UTC")

# Written by the previous version (main at 33d8417) for an entry that had run twice: an
# `every 10s` entry in Asia/Shanghai, sent to priority.high, its second run 1.2 ms late.
OLD_RECORD = (
    b'{"task": "proj.tasks.add", "schedule": "every 10s", "timezone": "Asia/Shanghai",'
    b' "catchup": "latest", "overlap": "allow", "jitter": "0s", "source": "python",'
    b' "queue": "priority.high", "fingerprint": "b1e53ab3624de35a", "settled": 1800000010.0,'
    b' "runs": 2, "missed": 0, "last_slot": 1800000010.0,'
    b' "last_task_id": "75649121-be1f-4676-92a2-1ed8b78e9d68",'
    b' "last_sent": 1800000010.0012, "lateness": 0.001199960708618164}'
)
# ... and by the same version for an entry planned but never run, with no queue of its own
OLD_PLANNED = (
    b'{"task": "proj.tasks.add", "schedule": "<crontab: 30 7 * * 1>", "timezone": "UTC",'
    b' "catchup": "latest", "overlap": "skip", "jitter": "0s", "source": "s.yaml:3",'
    b' "queue": null, "fingerprint": "0f0e0d0c0b0a0908", "settled": 1800000000.5,'
    b' "runs": 0, "missed": 0}'
)


# -- reading -------------------------------------------------------------------------------
def test_a_record_written_by_the_previous_version_reads_whole() -> None:
    record = EntryRecord.from_json(OLD_RECORD)
    assert (record.task, record.schedule, record.timezone) == (
        "proj.tasks.add",
        "every 10s",
        "Asia/Shanghai",
    )
    assert (record.catchup, record.overlap, record.jitter, record.source, record.queue) == (
        "latest",
        "allow",
        "0s",
        "python",
        "priority.high",
    )
    assert record.fingerprint == "b1e53ab3624de35a"
    assert (record.settled, record.runs, record.missed, record.overlapped) == (
        1800000010.0,
        2,
        0,
        0,
    )
    assert record.last_slot == 1800000010.0
    assert record.last_task_id == "75649121-be1f-4676-92a2-1ed8b78e9d68"
    assert (record.last_sent, record.lateness) == (1800000010.0012, 0.001199960708618164)
    assert record.extra == {}
    # written back, it is the object the previous version wrote: its readers read it alike
    assert json.loads(record.to_json()) == json.loads(OLD_RECORD)


def test_a_planned_record_of_the_previous_version_reads_as_never_run() -> None:
    record = EntryRecord.from_json(OLD_PLANNED)
    assert (record.runs, record.last_slot, record.last_task_id, record.lateness) == (
        0,
        None,
        None,
        None,
    )
    assert (record.settled, record.overlap, record.queue) == (1800000000.5, "skip", None)
    written = json.loads(record.to_json())
    # a null is left out, as the previous version left out the run fields it had not set
    assert written == {k: v for k, v in json.loads(OLD_PLANNED).items() if v is not None}
    assert "last_slot" not in written and "lateness" not in written


@pytest.mark.parametrize(
    "data",
    [None, b"", b"not json", b"[1, 2]", b"null", b'"text"', b"{", "{}"],
    ids=["none", "empty", "not-json", "list", "null", "string", "cut-short", "empty-object"],
)
def test_bytes_that_are_no_record_read_as_a_new_one(data: bytes | str | None) -> None:
    assert EntryRecord.from_json(data) == EntryRecord()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # a value of the wrong type is dropped: the field keeps its default
        (b'{"runs": "3", "missed": -1, "task": 5, "settled": true}', {}),
        (b'{"settled": NaN, "last_slot": Infinity, "lateness": "slow"}', {}),
        (b'{"last_task_id": null, "timezone": null, "runs": null}', {}),
        # numbers are numbers, whichever JSON spelling
        (
            b'{"runs": 3.0, "missed": 1, "last_slot": 17, "lateness": 0}',
            {
                "runs": 3,
                "missed": 1,
                "last_slot": 17.0,
                "lateness": 0.0,
            },
        ),
        # an older record without counters: they start at zero
        (b'{"task": "t", "settled": 5.5}', {"task": "t", "settled": 5.5}),
    ],
    ids=["wrong-types", "not-finite", "nulls", "numbers", "no-counters"],
)
def test_bad_values_fall_back_to_defaults(data: bytes, expected: dict[str, object]) -> None:
    record = EntryRecord.from_json(data)
    assert record == EntryRecord(**expected)  # type: ignore[arg-type]
    assert isinstance(record.runs, int) and isinstance(record.missed, int)


def test_keys_of_another_version_are_kept_through_the_beats_changes() -> None:
    """A record written by a newer beat survives a round through this one (a rollback):
    the keys it does not know are written back as they were."""
    data = json.loads(OLD_RECORD)
    data.update(history_cap=50, paused_by={"who": "ops", "at": 1800000005.0})
    record = EntryRecord.from_json(json.dumps(data))
    assert record.extra == {"history_cap": 50, "paused_by": {"who": "ops", "at": 1800000005.0}}
    after = record.copy(settled=1800000020.0, runs=3)
    after.extra["more"] = 1  # the copy's own: the original is not changed
    assert "more" not in record.extra
    written = json.loads(after.to_json())
    assert written["history_cap"] == 50 and written["paused_by"]["who"] == "ops"
    assert (written["settled"], written["runs"]) == (1800000020.0, 3)


def test_the_zone_falls_back_to_the_default_when_unnamed_or_unknown() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    assert EntryRecord(timezone="Asia/Shanghai").zone(UTC) == shanghai
    assert EntryRecord().zone(shanghai) is shanghai
    assert EntryRecord(timezone="Mars/Olympus_Mons").zone(shanghai) is shanghai


# -- writing -------------------------------------------------------------------------------
@pytest.mark.parametrize("stamps", [(1800000010.0012, 0.0012), (1800000009.99, 0.0), (None, None)])
def test_the_record_made_ready_ahead_and_stamped_is_the_record_written_whole(
    stamps: tuple[float | None, float | None],
) -> None:
    """The beat makes a run's record ready before the run's instant (`open_json`) and adds
    when it was sent at the instant (`close_json`): byte for byte what `to_json` writes."""
    record = EntryRecord.from_json(OLD_RECORD).copy(last_sent=None, lateness=None)
    record.extra["newer"] = [1, 2]
    head = record.open_json()
    last_sent, lateness = stamps
    record.last_sent, record.lateness = last_sent, lateness
    assert EntryRecord.close_json(head, last_sent, lateness) == record.to_json()
    assert EntryRecord.from_json(record.to_json()) == record


# -- upgrading a live store ------------------------------------------------------------------
FINGERPRINT = "b95630c1f800b8df"  # of `up` below, as the previous version computed it
OLD_TASK_ID = "0b8a3c1e-6d2f-4f7a-9c51-2e4b7d9a1f03"


def old_record(slot: float) -> bytes:
    """The record the previous version wrote for `up` after its 7th run, at `slot`."""
    return (
        b'{"task": "tests.proj.tasks.add", "schedule": "every 1s", "timezone": "Asia/Shanghai",'
        b' "catchup": "all", "overlap": "allow", "jitter": "0s", "source": "%s",'
        b' "queue": "beat-out", "fingerprint": "%s", "settled": %r, "runs": 7, "missed": 0,'
        b' "last_slot": %r, "last_task_id": "%s", "last_sent": %r, "lateness": 0.0012}'
        % (b"s.yaml:3", FINGERPRINT.encode(), slot, slot, OLD_TASK_ID.encode(), slot + 0.0012)
    )


@BOTH
def test_an_upgraded_beat_neither_repeats_nor_loses_the_last_run_of_the_old_one(
    app, env, tmp_path: Path, start_beat
) -> None:
    """A beat of the previous version ran `up` until 3 s ago, then stopped. The new beat
    takes over from its record: with catchup "all" it sends every run since that last
    one, that one not again; its counters go on from the old record's."""
    path = write_schedule(tmp_path / "s.yaml", {"up": tick(catchup="all")}, "Asia/Shanghai")
    last = float(int(time.time()) - 3)
    holder = "old-host:4242:a1b2c3"  # the old leader: planned its next run, then handed over
    token = app.broker.acquire_lease("beat", holder, 5.0)
    assert token is not None
    assert app.broker.beat_plan("beat", holder, token, {"up": (last, last + 1, old_record(last))})
    app.broker.release_lease("beat", holder, token)

    # read before the new beat has run anything: the old leader's last run, in its zone
    listing = cli(env, "schedule", "list", "--json")
    assert listing.returncode == 0, show(listing)
    [row] = json.loads(listing.stdout)
    shanghai = ZoneInfo("Asia/Shanghai")
    assert row["last_run"] == format_time(last, shanghai) and row["last_run"].endswith("+08:00")
    assert (row["task"], row["schedule"], row["runs"]) == ("tests.proj.tasks.add", "every 1s", 7)
    board = Dashboard(app)
    try:
        [shown] = board.snapshot()["schedules"]
    finally:
        board.close()
    assert (shown["runs"], shown["last_task_id"], shown["lateness_ms"]) == (7, OLD_TASK_ID, 1.2)
    assert (shown["zone"], shown["queue"]) == ("Asia/Shanghai", "beat-out")

    beat = start_beat(path)
    found = wait_for(lambda: len(s := slots(app, "up")) >= 6 and s, 20, "six runs of up")
    assert found[0] == last + 1, f"the runs after the old leader's last: {found[:4]}"
    beat.stop()
    found = slots(app, "up")
    assert_each_slot_once(found, 6)  # every run since the last, none of them twice
    record = entry_info(app, "up")
    assert record["runs"] == 7 + len(found), "the counters go on from the old record"
    assert record["last_slot"] == found[-1] and record["last_task_id"] != OLD_TASK_ID
    assert record["fingerprint"] == FINGERPRINT
