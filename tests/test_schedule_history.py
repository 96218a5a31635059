"""Each entry's run history says why a slot did not run (issue 23): the beat runs in this
process on a memory:// broker with a clock of the test's own, moved by hand."""

from __future__ import annotations

import json
import math
import time
import uuid

import pytest

from beatq import Beatq
from beatq.beat.beat import Beat
from beatq.beat.history import CAUGHT_UP, OVERLAP, PAUSED
from beatq.exceptions import ScheduleError

MINUTE = 1_800_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def leading() -> tuple[Beatq, Beat, Clock]:
    return lead(
        {
            "latest": {"task": "history.noop", "schedule": 1.0, "options": {"queue": "out"}},
            "single": {
                "task": "history.noop",
                "schedule": 1.0,
                "overlap": "skip",
                "options": {"queue": "out"},
            },
        }
    )


def lead(schedule: dict, start: float = MINUTE, keep: int = 1000) -> tuple[Beatq, Beat, Clock]:
    """A beat of `schedule` leading on a memory:// broker, at `start` + 0.5 by its clock,
    keeping `keep` history records per entry."""
    app = Beatq("history", broker=f"memory://history-{uuid.uuid4().hex}")
    app.task(name="history.noop", ignore_result=True)(lambda: None)
    app.conf.beat_schedule = schedule
    app.conf.beat_history_len = keep
    clock = Clock(start + 0.5)
    beat = Beat(app, files=[], clock=clock, lease_ttl=600)
    beat._sleep = lambda seconds, precise: None  # one tick at a time, by hand
    beat.entries = beat.load()
    assert beat.lease.acquire()
    beat._lead()
    return app, beat, clock


def history(app: Beatq, name: str) -> list[tuple[float, str | None]]:
    """(slot, why not run) of `name`'s records, oldest first (None: it ran)."""
    return [(r.slot, r.reason) for r in reversed(app.schedules.history(name, 100))]


def test_slots_given_up_by_the_catch_up_policy_say_so(leading) -> None:
    app, beat, clock = leading
    clock.now = MINUTE + 1.0
    beat._tick()
    clock.now = MINUTE + 5.2  # the beat stalled for four seconds while it led
    beat._tick()
    assert history(app, "latest") == [
        (MINUTE + 1, None),
        (MINUTE + 2, CAUGHT_UP),
        (MINUTE + 3, CAUGHT_UP),
        (MINUTE + 4, CAUGHT_UP),
        (MINUTE + 5, None),
    ]
    ran = [r for r in reversed(app.schedules.history("latest", 100)) if r.sent_at is not None]
    assert [r.lateness for r in ran] == [0.0, pytest.approx(0.2)]


def test_a_slot_skipped_while_the_previous_run_is_unfinished_says_so(leading) -> None:
    app, beat, clock = leading
    for second in (1, 2, 3):
        clock.now = MINUTE + second
        beat._tick()
    # no worker takes the first run: it is unfinished, so "single" skips the next two
    assert history(app, "single") == [
        (MINUTE + 1, None),
        (MINUTE + 2, OVERLAP),
        (MINUTE + 3, OVERLAP),
    ]
    assert [reason for _, reason in history(app, "latest")] == [None, None, None]


def test_no_history_is_kept_with_beat_history_len_0(leading) -> None:
    app, beat, clock = leading
    beat.history_len = 0
    clock.now = MINUTE + 1.0
    beat._tick()
    assert app.schedules.history("latest", 10) == []
    assert beat.records["latest"].runs == 1


def test_slots_outside_start_at_and_end_at_are_no_slots_of_the_entry() -> None:
    """No record, and no reason, for the seconds before start_at and from end_at on: the
    entry has no slot there (beat/history.py says why)."""
    window = {"start_at": MINUTE + 3, "end_at": MINUTE + 5}
    app, beat, clock = lead(
        {"bounded": {"task": "history.noop", "schedule": 1.0, "catchup": "all", **window}}
    )
    for second in range(1, 9):
        clock.now = MINUTE + second
        beat._tick()
    assert history(app, "bounded") == [(MINUTE + 3, None), (MINUTE + 4, None)]
    assert app.schedules.get("bounded").next_run is None, "no run from end_at on"


# -- out of turn: backfill against the capped history, a paused entry ----------------------------
def recent(keep: int = 1000) -> tuple[Beatq, Beat, Clock, float]:
    """A beat leading "fill" (every second, its runs kept) from two minutes ago, by its
    clock: a backfill's range must end before now."""
    base = float(math.floor(time.time()) - 120)
    schedule = {"fill": {"task": "history.noop", "schedule": 1.0, "options": {"queue": "out"}}}
    app, beat, clock = lead(schedule, base, keep)
    return app, beat, clock, base


def tick_at(beat: Beat, clock: Clock, at: float) -> None:
    clock.now = at
    beat.next_store_check = 0.0  # the store is read at every tick here
    beat._tick()


def kinds(app: Beatq, kind: str) -> list[float]:
    """The slots of `fill` run as `kind` (schedule, trigger, backfill), oldest first."""
    found = app.schedules.history("fill", 1000)
    return sorted(r.slot for r in found if r.kind == kind and r.sent_at is not None)


def test_a_backfill_older_than_the_kept_history_is_refused_and_never_reruns_a_slot() -> None:
    app, beat, clock, base = recent(keep=5)
    for second in (1, 2, 3):
        tick_at(beat, clock, base + second)
    app.schedules.pause("fill")
    for second in range(4, 11):
        tick_at(beat, clock, base + second)  # paused: 4 to 10; only 6 to 10 are kept
    kept = app.schedules.history("fill", 10)
    assert [(r.slot, r.reason) for r in kept] == [(base + s, PAUSED) for s in range(10, 5, -1)]
    # slots 4 and 5 did not run, 1 to 3 did: the history can no longer tell them apart
    with pytest.raises(ScheduleError, match=r"field 'start': the run history keeps its newest 5"):
        app.schedules.backfill("fill", base + 1, base + 11)
    with pytest.raises(ScheduleError, match="or raise beat_history_len"):
        app.schedules.backfill("fill", base + 6, base + 11)  # 6's record was made at base + 6
    app.schedules.backfill("fill", base + 7, base + 11)  # a paused entry's backfill runs
    tick_at(beat, clock, base + 10.5)
    assert kinds(app, "backfill") == [base + 7, base + 8, base + 9, base + 10]
    # a request from a client that did not check (or before the history was trimmed):
    # the leader leaves out what the history no longer covers; nothing runs twice
    body = {"entry": "fill", "kind": "backfill", "start": base + 1, "end": base + 11}
    app.broker.schedule_request("old-client", json.dumps(body).encode(), 3600)
    tick_at(beat, clock, base + 10.6)
    assert kinds(app, "backfill") == [base + 7, base + 8, base + 9, base + 10]
    assert kinds(app, "schedule") == [], "the 3 runs' records were dropped, none ran again"
    assert app.broker.schedule_requests()[-1].done is not None, "the request is done"


def test_backfill_needs_a_history() -> None:
    app, beat, clock, base = recent(keep=0)
    tick_at(beat, clock, base + 1)
    with pytest.raises(ScheduleError, match="beat_history_len is 0 .*set it above 0"):
        app.schedules.backfill("fill", base, base + 2)


def test_a_paused_entry_runs_a_trigger_and_a_backfill_not_its_schedule() -> None:
    app, beat, clock, base = recent()
    tick_at(beat, clock, base + 1)
    app.schedules.pause("fill")
    for second in (2, 3, 4):
        tick_at(beat, clock, base + second)
    app.schedules.trigger("fill", run_id="now-1")
    app.schedules.backfill("fill", base + 2, base + 4)
    tick_at(beat, clock, base + 4.5)
    tick_at(beat, clock, base + 5)
    assert kinds(app, "schedule") == [base + 1], "paused from 2 on"
    assert len(kinds(app, "trigger")) == 1
    assert kinds(app, "backfill") == [base + 2, base + 3]
