"""Schedules at run time (SPEC §12, issue 23): entries added, changed, removed, run now
and backfilled through `app.schedules` while real `beatq beat` processes run.

As in test_beat_e2e.py, the entries send to a queue no worker consumes, and the tests
read back from the store which (entry, slot) runs were sent, and how many times.
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from beatq import Beatq
from beatq.beat.history import NO_LEADER
from beatq.beat.schedules import crontab
from beatq.beat.store import EntryNotFound
from beatq.exceptions import ScheduleError
from tests.conftest import scaled, wait_for
from tests.proj import journal
from tests.test_beat_e2e import (
    OUT,
    assert_each_slot_once,
    leader,
    led_by,
    sent,
    write_schedule,
)
from tests.test_beat_e2e import start_beat as start_beat_fixture

start_beat = start_beat_fixture  # the fixture that starts `beatq beat` processes

BOTH = pytest.mark.backends("redis", "sqlite")
ADD = "tests.proj.tasks.add"


@pytest.fixture
def beat_file(tmp_path: Path) -> Path:
    """A schedule file with one entry of its own (the beat needs no file entry: a store
    entry is enough; this one shows the two sources side by side)."""
    return write_schedule(tmp_path / "s.yaml", {"from-file": {"task": ADD, "every": "1h"}})


def leading(app) -> str:
    return wait_for(lambda: leader(app), 30, "a beat to lead")


def runs_of(app, entry: str, kind: str | None = None) -> list[float]:
    """The slots sent for `entry` (of `kind`: trigger, backfill; None: the schedule's)."""
    return [
        slot
        for name, slot, message in sent(app)
        if name == entry and message.options["beat"].get("kind") == kind
    ]


def store_changes(beat) -> int:
    """How many store changes the beat has taken up so far (its log says each)."""
    return beat.log().count("beat: store changed")


def changed_seen(beat, before: int) -> None:
    """Wait until the beat takes up a store change after the `before` it had seen."""
    wait_for(lambda: store_changes(beat) > before, 10, "the change taken up")


# -- adding, changing, removing -----------------------------------------------------------------
@BOTH
def test_an_entry_added_from_a_client_runs_on_time(app, beat_file, start_beat):
    start_beat(beat_file)
    leading(app)
    added = time.time()
    start = math.ceil(added) + 2  # its first run: two seconds on
    app.schedules.add("tick", ADD, "1s", args=[1, 2], options={"queue": OUT}, start_at=start)
    found = wait_for(lambda: len(s := runs_of(app, "tick")) >= 3 and s, 10, "3 runs")
    assert found[0] == start, "no run before start_at, the first at it"
    assert_each_slot_once(found, 3)
    first = app.schedules.history("tick", 100)[-1]
    assert first.slot == start and first.kind == "schedule"
    assert first.sent_at is not None and first.lateness is not None
    # sent for its slot by a timer set well ahead (the beat's precision is bench/sched.py's
    # to measure: a loaded CI machine sent it 138 ms late); a slot missed until the next
    # read of the store would be a second late or more
    assert first.lateness < scaled(0.5), f"sent {first.lateness * 1000:.1f} ms late"
    entry = app.schedules.get("tick")
    assert (entry.source, entry.task, entry.schedule) == ("store", ADD, "every 1s")
    assert entry.runs >= 3 and entry.next_run is not None


@BOTH
def test_many_entries_added_at_once_are_planned_and_run(app, beat_file, start_beat):
    start_beat(beat_file)
    leading(app)
    batch = {f"bulk-{n:03d}": {"task": ADD, "cron": f"{n % 60} 3 * * *"} for n in range(300)}
    batch["tick"] = {"task": ADD, "schedule": "1s", "options": {"queue": OUT}}
    added = app.schedules.add_many(batch)
    assert len(added) == 301 and added[-1].schedule == "every 1s"
    wait_for(lambda: len(app.broker.beat_entries()) >= 302, 10, "all 301 planned (and from-file)")
    wait_for(lambda: len(runs_of(app, "tick")) >= 2, 10, "the tick's runs")
    assert_each_slot_once(runs_of(app, "tick"), 2)
    assert app.broker.beat_entries()["bulk-299"].next_run is not None


@pytest.mark.backends("memory")
def test_a_bad_batch_is_refused_whole_naming_the_first_bad_entry(app, backend, monkeypatch):
    s = app.schedules
    s.add("taken", ADD, "1h")
    cases = [
        ([{"name": "a", "task": ADD, "schedule": "1h"}, {"name": "b", "task": ADD}], "'b': needs"),
        ({"a": {"task": ADD, "every": "1h"}, "b": {"task": ADD, "every": "nope"}}, "'b', field"),
        ([{"name": "a", "task": ADD, "every": "1h"}] * 2, "'a', field 'name': given twice"),
        ({"taken": {"task": ADD, "every": "1h"}}, "'taken' exist already (1 of 1)"),
        ([{"task": ADD, "every": "1h"}], "item 1 is not a mapping with a 'name'"),
    ]
    for batch, expected in cases:
        with pytest.raises(ScheduleError, match=re.escape(expected)) as refused:
            s.add_many(batch)
        assert "nothing was added" in str(refused.value) or "item 1" in expected, refused.value
        assert [e.name for e in s.list() if e.source == "store"] == ["taken"], "none added"
    version = app.broker.schedule_version()
    s.add_many({f"e{n}": {"task": ADD, "schedule": f"{n + 1}h"} for n in range(3)})
    assert app.broker.schedule_version() == version + 1, "one change for a step of the batch"
    assert [e.name for e in s.list() if e.source == "store"] == ["e0", "e1", "e2", "taken"]
    # stored two at a time, the second step finds a name taken: the first step is undone
    monkeypatch.setattr("beatq.beat.store.ADD_STEP", 2)
    batch = {n: {"task": ADD, "every": "1h"} for n in ("f1", "f2", "taken", "f3")}
    with pytest.raises(ScheduleError, match=re.escape("'taken' exist already (1 of 4)")):
        s.add_many(batch)
    assert [e.name for e in s.list() if e.source == "store"] == ["e0", "e1", "e2", "taken"]


@BOTH
def test_changing_the_schedule_while_it_runs_neither_doubles_nor_skips_a_slot(
    app, beat_file, start_beat
):
    beat = start_beat(beat_file)
    leading(app)
    app.schedules.add("tick", ADD, "1s", options={"queue": OUT})
    wait_for(lambda: len(runs_of(app, "tick")) >= 3, 10, "3 runs every second")
    changed_at, seen_changes = time.time(), store_changes(beat)
    app.schedules.update("tick", schedule="0 3 * * *", args=[5, 5])  # now daily at 03:00
    changed_seen(beat, seen_changes)
    seen = time.time()
    time.sleep(1.2)  # a run of the old definition would be sent within a second
    found = runs_of(app, "tick")
    assert_each_slot_once(found, 3)
    # between the change and the leader seeing it (under a second) the old definition
    # may send one or two more seconds; none after it, and each slot once
    assert all(s <= seen + 0.5 for s in found), (found, seen)
    assert len([s for s in found if s > changed_at]) <= 2, (found, changed_at)
    daily = crontab.from_string("0 3 * * *").next_after(datetime.now(timezone.utc))
    wait_for(lambda: app.schedules.get("tick").next_run == daily.timestamp(), 5, "03:00 planned")
    spec = app.schedules.get("tick").spec
    assert spec["cron"] == "0 3 * * *" and spec["args"] == [5, 5] and "every" not in spec


@BOTH
def test_a_removed_entry_sends_no_more_and_its_history_stays(app, beat_file, start_beat):
    beat = start_beat(beat_file)
    leading(app)
    app.schedules.add("tick", ADD, "1s", options={"queue": OUT})
    wait_for(lambda: len(runs_of(app, "tick")) >= 2, 10, "2 runs")
    seen_changes = store_changes(beat)
    app.schedules.remove("tick")
    changed_seen(beat, seen_changes)
    wait_for(lambda: "tick" not in app.broker.beat_entries(), 5, "its state gone")
    count = len(runs_of(app, "tick"))
    last = max(runs_of(app, "tick"))
    time.sleep(1.5)  # a whole slot and more: a run would have been sent
    assert len(runs_of(app, "tick")) == count and max(runs_of(app, "tick")) == last
    assert len(app.schedules.history("tick", 100)) == count
    with pytest.raises(EntryNotFound, match="no schedule entry 'tick'"):
        app.schedules.get("tick")


@BOTH
def test_store_entries_survive_a_beat_restart(app, beat_file, start_beat):
    first = start_beat(beat_file)
    leading(app)
    app.schedules.add("tick", ADD, "1s", options={"queue": OUT}, catchup="all")
    wait_for(lambda: len(runs_of(app, "tick")) >= 2, 10, "2 runs")
    first.stop()
    stopped = max(runs_of(app, "tick"))
    start_beat(beat_file)
    wait_for(lambda: max(runs_of(app, "tick")) >= stopped + 3, 15, "runs after the restart")
    assert_each_slot_once(runs_of(app, "tick"), 5)  # catchup all: the restart's gap filled


@BOTH
def test_a_run_in_flight_finishes_after_its_entry_is_removed(
    app, beat_file, start_beat, start_worker
):
    start_worker("-P", "threads", "-c", "2")
    beat = start_beat(beat_file)
    leading(app)
    at = datetime.fromtimestamp(math.ceil(time.time()) + 2, timezone.utc)
    app.schedules.add("slow", "tests.proj.tasks.sleep", at, args=[2.0, "slow"])
    wait_for(lambda: "slow:start" in str(journal("runs")), 15, "the run to start")
    seen_changes = store_changes(beat)
    app.schedules.remove("slow")
    changed_seen(beat, seen_changes)
    wait_for(lambda: "slow:end" in str(journal("runs")), 15, "the run to finish")
    wait_for(lambda: app.schedules.history("slow", 10)[0].state == "SUCCESS", 5, "its result")
    (record,) = app.schedules.history("slow", 10)
    assert record.slot == at.timestamp() and record.state == "SUCCESS"
    assert record.took is not None and record.took >= 2.0
    # the task's own runtime (the worker's measure), beside `took` (queue wait and run)
    assert record.runtime is not None and 2.0 <= record.runtime <= record.took
    assert "slow" not in app.broker.beat_entries()


@BOTH
def test_history_shows_every_slot_with_its_reason(app, beat_file, start_beat):
    beats = [start_beat(beat_file, ttl=3)]
    leading(app)
    beats.append(start_beat(beat_file, ttl=3))
    app.schedules.add("tick", ADD, "1s", options={"queue": OUT})  # catchup latest

    def records(reason: str | None = None, sent_only: bool = False) -> list[float]:
        found = app.schedules.history("tick", 1000)
        return sorted(
            r.slot
            for r in found
            if (r.sent_at is not None if sent_only else r.reason == reason or reason is None)
        )

    wait_for(lambda: len(records(sent_only=True)) >= 2, 10, "2 runs")
    app.schedules.pause("tick")
    wait_for(lambda: len(records("paused")) >= 2, 10, "2 slots paused")
    app.schedules.resume("tick")
    resumed = max(records("paused"))
    wait_for(lambda: max(records(sent_only=True)) > resumed, 10, "a run after resume")
    # kill the leader between two runs, once the last one's record is written
    last = max(slots_sent := runs_of(app, "tick"))
    wait_for(lambda: last in records(sent_only=True), 5, "the last run's record")
    old = led_by(app, beats)
    os.kill(old.pid, signal.SIGKILL)
    old.wait(5)
    wait_for(lambda: len(records(NO_LEADER)) >= 1, 20, "the slots missed while no beat led")
    wait_for(lambda: len(records(sent_only=True)) >= len(slots_sent) + 2, 10, "2 more runs")

    everything = app.schedules.history("tick", 1000)
    found = sorted(r.slot for r in everything)
    assert_each_slot_once(found, 8)  # every slot from the first on, each with a record
    for r in everything:
        if r.sent_at is None:
            assert r.reason in ("paused", NO_LEADER) and r.task_id is None, r
        else:
            assert r.reason is None and r.task_id and r.lateness is not None, r
    assert sorted(s for s in found if s not in records(sent_only=True)) == sorted(
        records("paused") + records(NO_LEADER)
    )
    assert sorted(runs_of(app, "tick")) == records(sent_only=True), "a record per run sent"


# -- running out of turn ------------------------------------------------------------------------
def other_client(app) -> Beatq:
    """A second app on the same store, as on another host (its own connections)."""
    other = Beatq("other-host", broker=app.conf.broker_url)
    other.conf.broker_transport_options = dict(app.conf.broker_transport_options)
    return other


@BOTH
def test_a_trigger_from_two_clients_with_one_run_id_runs_once(app, beat_file, start_beat):
    start_beat(beat_file)
    leading(app)
    app.schedules.add("nightly", ADD, "0 3 * * *", args=[2, 3], options={"queue": OUT})
    clients = [app, other_client(app)]
    barrier = threading.Barrier(2)
    results = []

    def trigger(client: Beatq) -> None:
        barrier.wait()
        results.append(client.schedules.trigger("nightly", run_id="rerun-2027-01-01").id)

    threads = [threading.Thread(target=trigger, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["rerun-2027-01-01"] * 2
    wait_for(lambda: runs_of(app, "nightly", "trigger"), 5, "the triggered run")
    app.schedules.trigger("nightly", run_id="rerun-2027-01-01")  # once more, later
    app.schedules.trigger("nightly")  # a new run id: another run
    wait_for(lambda: len(runs_of(app, "nightly", "trigger")) == 2, 5, "the second trigger")
    time.sleep(1.0)  # two store checks: a third run would show
    triggered = [m for name, _, m in sent(app) if name == "nightly"]
    assert len(triggered) == 2
    assert "rerun-2027-01-01" in {m.id for m in triggered}, "the run id is the task id"
    assert all(m.args == [2, 3] for m in triggered)
    assert runs_of(app, "nightly") == [], "the schedule's own slots are untouched"
    kinds = [r.kind for r in app.schedules.history("nightly", 10)]
    assert kinds == ["trigger", "trigger"]


@BOTH
def test_a_backfill_sends_each_missed_slot_once_across_a_kill_9_of_the_leader(
    app, beat_file, start_beat
):
    beats = [start_beat(beat_file, ttl=1.5)]
    leading(app)
    beats.append(start_beat(beat_file, ttl=1.5))
    app.schedules.add("fast", ADD, "200ms", options={"queue": OUT}, catchup="all")
    wait_for(lambda: len(runs_of(app, "fast")) >= 2, 10, "2 runs")
    app.schedules.pause("fast")
    paused_at = time.time()
    wait_until_settled = paused_at + 2.4 + scaled(0.5)

    def paused_slots() -> list[float]:
        records = app.schedules.history("fast", 1000)
        return sorted(r.slot for r in records if r.reason == "paused")

    wait_for(
        lambda: len(paused_slots()) >= 11 and time.time() > wait_until_settled,
        10,
        "11 paused slots",
    )
    app.schedules.resume("fast")
    skipped = paused_slots()
    start, end = skipped[0], skipped[10]  # [start, end): ten slots
    assert not set(skipped[:10]) & set(runs_of(app, "fast"))
    app.schedules.backfill("fast", start, end, spacing=0.4)
    wait_for(lambda: len(runs_of(app, "fast", "backfill")) >= 4, 15, "4 backfilled runs")
    old = led_by(app, beats)
    os.kill(old.pid, signal.SIGKILL)
    old.wait(5)
    done = wait_for(
        lambda: len(b := runs_of(app, "fast", "backfill")) >= 10 and b, 20, "10 backfilled"
    )
    time.sleep(1.0)  # a repeat would come within the spacing
    done = runs_of(app, "fast", "backfill")
    repeats = [s for s, n in Counter(done).items() if n > 1]
    assert not repeats, f"backfilled twice: {repeats}"
    assert done == skipped[:10], "each paused slot in the range, in order, once"
    new = next(b for b in beats if b is not old)
    assert "is the leader now" in new.log() and "backfill" in new.log()
    history = app.schedules.history("fast", 1000)
    assert sorted(r.slot for r in history if r.kind == "backfill") == skipped[:10]


@BOTH
def test_with_overlap_skip_a_trigger_waits_for_the_unfinished_run(
    app, beat_file, start_worker, start_beat
):
    """Two runs asked at once, a worker free to run both: the second is sent only once
    the first has finished (never two at once), and neither is dropped."""
    start_worker("-P", "threads", "-c", "2")
    beat = start_beat(beat_file)
    leading(app)
    app.schedules.add("single", "tests.proj.tasks.sleep", "0 3 * * *", args=[1.5, "one"])
    app.schedules.update("single", overlap="skip")
    first = app.schedules.trigger("single", run_id="first")
    wait_for(lambda: "one:start" in str(journal("runs")), 15, "the first run to start")
    second = app.schedules.trigger("single", run_id="second")
    assert first.get(timeout=15) == "one" and second.get(timeout=15) == "one"
    runs = [line.split(":")[1] for line in journal("runs")]
    assert runs == ["start", "end", "start", "end"], "one run at a time"
    assert "trigger second of entry 'single' waits" in beat.log()
    assert [r.kind for r in app.schedules.history("single", 10)] == ["trigger", "trigger"]


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.backends("memory")
def test_bad_input_names_the_entry_the_field_and_the_fix(app, backend):
    s = app.schedules
    cases = {
        "field 'schedule': cron: crontab day_of_month '31'": {"schedule": "30 2 31 2 *"},
        "field 'schedule': cron: cron 'daily at 3' has 3 fields": {"schedule": "daily at 3"},
        "field 'task': names task 'tests.proj.tasks.ad', which is not registered "
        "(did you mean 'tests.proj.tasks.add'?)": {"task": "tests.proj.tasks.ad"},
        "field 'catchup': catchup 'never' is not one of: skip, latest, all": {"catchup": "never"},
        "field 'end_at': end_at must be after start_at": {
            "start_at": "2030-01-02",
            "end_at": "2030-01-01",
        },
        "field 'end_at': is in the past": {"end_at": "2001-01-01T00:00:00"},
        "field 'schedule': at 2001-01-01T00:00:00+00:00 has no run after now": {
            "schedule": "2001-01-01T00:00:00"
        },
        "field 'jitter': jitter: 'lots' is not a duration": {"jitter": "lots"},
        "field 'retries': unknown field": {"retries": 3},
        "field 'kwargs': cannot be stored in the broker as JSON": {"kwargs": {"x": object()}},
    }
    for expected, change in cases.items():
        fields = {"task": ADD, "schedule": "1s", **change}
        with pytest.raises(ScheduleError) as refused:
            s.add("bad", **fields)
        assert str(refused.value).startswith("schedule entry 'bad', "), refused.value
        assert expected in str(refused.value), refused.value
    assert [e.name for e in s.list() if e.source == "store"] == []

    s.add("ok", ADD, "1s")
    with pytest.raises(ScheduleError, match="'ok' exists already; change it with update"):
        s.add("ok", ADD, "2s")
    with pytest.raises(EntryNotFound, match="no schedule entry 'nope'; entries: .*ok"):
        s.update("nope", schedule="2s")
    with pytest.raises(ScheduleError, match="field 'schedule'"):
        s.update("ok", schedule="61 * * * *")
    assert s.get("ok").schedule == "every 1s", "a refused update changes nothing"
    with pytest.raises(ScheduleError, match="field 'end': is in the future"):
        s.backfill("ok", time.time() - 10, time.time() + 3600)
    with pytest.raises(ScheduleError, match="field 'end': must be after start"):
        s.backfill("ok", time.time() - 10, time.time() - 20)


@pytest.mark.backends("memory")
def test_file_and_code_entries_are_owned_there(app, backend, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "schedules").mkdir()
    write_schedule(tmp_path / "schedules" / "jobs.yaml", {"report": {"task": ADD, "every": "1h"}})
    app.conf.beat_schedule = {"in-code": {"task": ADD, "schedule": 60.0}}
    try:
        s = app.schedules
        with pytest.raises(ScheduleError, match=r"'report' is defined in schedules/jobs.yaml:3"):
            s.add("report", ADD, "1s")
        with pytest.raises(ScheduleError, match=r"'report' is defined in schedules/jobs.yaml:3"):
            s.update("report", schedule="2h")
        owned = r"'in-code' is defined in the app's beat_schedule, not in the store"
        with pytest.raises(ScheduleError, match=owned):
            s.remove("in-code")
        sources = {e.name: e.source for e in s.list()}
        assert sources["report"] == "schedules/jobs.yaml:3" and sources["in-code"] == "python"
        assert not [e for e in s.list() if e.source == "store"]
    finally:
        app.conf.beat_schedule = {}


def test_start_at_and_end_at_bound_a_file_entry_too(tmp_path):
    from beatq.beat.loader import load_file
    from beatq.timezones import get_zone

    path = write_schedule(
        tmp_path / "s.yaml",
        {
            "window": {
                "task": ADD,
                "cron": "0 * * * *",
                "start_at": "2027-03-01T09:30:00",
                "end_at": "2027-03-01T12:00:00",
            },
        },
        zone="Asia/Shanghai",
    )
    entry = load_file(path, get_zone("UTC"))["window"]
    shanghai = get_zone("Asia/Shanghai")
    hour = [datetime(2027, 3, 1, h, tzinfo=shanghai).timestamp() for h in (10, 11)]
    assert entry.slots_between(0.0, hour[1] + 86400, 10)[0] == hour, "10:00 and 11:00 only"
    assert entry.next_after(hour[1]) is None, "none at or after end_at"
    write_schedule(path, {"w": {"task": ADD, "every": "1h", "end_at": "soon"}})
    with pytest.raises(ScheduleError, match=r"s.yaml:\d+: entry 'w': end_at 'soon' is not a time"):
        load_file(path, get_zone("UTC"))


def test_a_refused_spec_survives_pickling_with_its_entry_and_field():
    """A task that fails on a refused spec under the pickle result serializer, or a
    refusal crossing a process pool, reaches the caller whole: the same class, text,
    entry and field (SpecError's __init__ takes three arguments, not its message)."""
    import pickle

    from beatq.beat.specs import SpecError

    refused = SpecError("nightly", "schedule", "'61 * * * *' is no cron expression")
    back = pickle.loads(pickle.dumps(refused))
    assert type(back) is SpecError
    assert str(back) == str(refused)
    assert (back.entry, back.field) == ("nightly", "schedule")
    plain = pickle.loads(pickle.dumps(ScheduleError("schedules.yaml:3: bad", field="tz")))
    assert (str(plain), plain.field) == ("schedules.yaml:3: bad", "tz")
