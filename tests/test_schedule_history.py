"""Each entry's run history says why a slot did not run (issue 23): the beat runs in this
process on a memory:// broker with a clock of the test's own, moved by hand."""

from __future__ import annotations

import uuid

import pytest

from beatq import Beatq
from beatq.beat.beat import Beat
from beatq.beat.history import CAUGHT_UP, OVERLAP

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


def lead(schedule: dict) -> tuple[Beatq, Beat, Clock]:
    """A beat of `schedule` leading on a memory:// broker, at MINUTE + 0.5 by its clock."""
    app = Beatq("history", broker=f"memory://history-{uuid.uuid4().hex}")
    app.task(name="history.noop", ignore_result=True)(lambda: None)
    app.conf.beat_schedule = schedule
    clock = Clock(MINUTE + 0.5)
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
