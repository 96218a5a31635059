"""A burst of runs due at one instant: how the beat orders and batches them.

The beat runs in this process on a memory:// broker with a clock of the test's own, which
each dispatch round trip moves on, so "a slow burst" takes no real time.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from beatq import Beatq
from beatq.beat.beat import Beat
from beatq.beat.entries import Entry

MINUTE = 1_800_000_000.0  # a whole minute (and second): where every `every` entry falls due


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def burst() -> tuple[Beat, Clock, list[dict]]:
    app = Beatq("burst", broker=f"memory://burst-{uuid.uuid4().hex}")

    @app.task(name="burst.noop", ignore_result=True)
    def noop() -> None:
        return None

    schedule = {f"bulk-{i:04d}": {"task": "burst.noop", "schedule": 60.0} for i in range(1200)}
    schedule["tick"] = {"task": "burst.noop", "schedule": timedelta(seconds=1)}
    app.conf.beat_schedule = schedule
    clock = Clock(MINUTE - 0.5)
    beat = Beat(app, files=[], clock=clock, lease_ttl=60)  # no renewal due mid-test
    beat.batch_size = 250
    beat._sleep = lambda seconds, precise: None  # one tick at a time, by hand
    calls: list[dict] = []
    dispatch_many = app.broker.beat_dispatch_many

    def slow_dispatch(lease, holder, token, runs):  # each round trip takes 0.3 s of the clock
        calls.append({"at": clock.now, "entries": [r.entry for r in runs], "heap": len(beat.heap)})
        clock.now += 0.3
        return dispatch_many(lease, holder, token, runs)

    app.broker.beat_dispatch_many = slow_dispatch
    beat.entries = beat.load()
    assert beat.lease.acquire()
    beat._lead()
    return beat, clock, calls


def test_the_first_batch_of_a_burst_leaves_before_the_rest_is_taken_off_the_heap(burst) -> None:
    beat, clock, calls = burst
    clock.now = MINUTE + 0.001
    beat._tick()
    first = calls[0]
    assert first["at"] == MINUTE + 0.001
    assert len(first["entries"]) == 250
    assert first["entries"][0] == "tick", "of runs due at once, the most frequent goes first"
    assert first["heap"] >= 900, "the burst's rest still waits on the heap"
    sent = [name for call in calls for name in call["entries"]]
    bulk = [name for name in sent if name.startswith("bulk-")]
    assert sorted(bulk) == [f"bulk-{i:04d}" for i in range(1200)]


def test_a_run_falling_due_during_a_burst_goes_ahead_of_the_burst_rest(burst) -> None:
    beat, clock, calls = burst
    clock.now = MINUTE + 0.001
    beat._tick()
    # round trips at +0.001, +0.301, +0.601, +0.901, then +1.201: the tick's next run is due
    assert [round(c["at"] - MINUTE, 3) for c in calls] == [0.001, 0.301, 0.601, 0.901, 1.201]
    assert [len(c["entries"]) for c in calls] == [250, 250, 250, 250, 202]
    assert calls[4]["entries"][0] == "tick"
    assert all(name.startswith("bulk-") for name in calls[4]["entries"][1:])
    assert [i for i, c in enumerate(calls) if "tick" in c["entries"]] == [0, 4]
    records = beat.records
    assert (records["tick"].runs, records["tick"].missed) == (2, 0)
    assert all(records[f"bulk-{i:04d}"].runs == 1 for i in range(1200))


def test_planning_that_outlasts_the_lease_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A big schedule on a slow machine: planning 2,000 entries takes ~1.2 s here (each
    entry's next run made slow on purpose), three times the 0.4-s lease. The beat renews
    the lease between chunks, so it stays the leader and every entry is planned; planned
    in one go, the lease would expire first and the beat would lose it on every try."""
    app = Beatq("plan", broker=f"memory://plan-{uuid.uuid4().hex}")
    app.task(name="plan.noop", ignore_result=True)(lambda: None)
    app.conf.beat_schedule = {
        f"e-{i:04d}": {"task": "plan.noop", "schedule": 60.0} for i in range(2000)
    }
    beat = Beat(app, files=[], lease_ttl=0.4)
    beat.plan_chunk = 100
    beat.entries = beat.load()
    slow_next = Entry.next_after

    def next_after(self: Entry, instant: float) -> float | None:
        time.sleep(0.0006)
        return slow_next(self, instant)

    monkeypatch.setattr(Entry, "next_after", next_after)
    assert beat.lease.acquire()
    token, started = beat.lease.token, time.monotonic()
    beat._lead()
    assert time.monotonic() - started > 3 * 0.4, "planning was not slower than the lease"
    assert beat.lease.token == token and beat.lease.renew()
    planned = app.broker.beat_entries()
    assert len(planned) == 2000
    assert all(state.next_run is not None for state in planned.values())
