"""Events as an app sends them, and what a monitor makes of them (the stream itself, in
every backend: tests/contract/test_events.py)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from beatq import Beatq
from beatq import events as ev
from beatq.events import Event, State

# -- app.events and State ----------------------------------------------------------------


def test_app_events_send_only_when_enabled(tmp_path: Path) -> None:
    app = Beatq("t", broker=f"memory://events-app-{uuid.uuid4().hex}")
    app.events.send(ev.TASK_STARTED, task_id="x")
    assert app.events.recent() == []
    app.conf.worker_send_task_events = True
    app.events.send(ev.TASK_STARTED, task_id="x", hostname="w1")
    app.conf.beat_send_events = True
    app.events.send(ev.BEAT_ELECTED, holder="b1")
    events = app.events.recent()
    assert [(e.type, e.fields) for e in events] == [
        ("task-started", {"task_id": "x", "hostname": "w1"}),
        ("beat-elected", {"holder": "b1"}),
    ]
    assert abs(events[0].time - time.time()) < 5
    assert app.events.read(after=events[0].id) == events[1:]


def test_task_sent_rides_with_the_message(tmp_path: Path) -> None:
    app = Beatq("t", broker=f"memory://events-sent-{uuid.uuid4().hex}")
    app.conf.task_send_sent_event = True
    result = app.send_task("proj.add", (2, 2), queue="q1", countdown=30)
    (event,) = app.events.recent()
    assert event.type == "task-sent"
    assert event.fields["task_id"] == result.id
    assert event.fields["name"] == "proj.add"
    assert event.fields["args"] == "[2, 2]"
    assert event.fields["queue"] == "q1"
    assert event.fields["eta"] == pytest.approx(time.time() + 30, abs=5)


def _event(n: int, type_: str, at: float, **fields: object) -> Event:
    return Event(str(n), type_, at, dict(fields))


def test_state_follows_a_task_through_its_events() -> None:
    state = State()
    t0 = 1_700_000_000.0
    state.feed_all(
        [
            _event(1, "task-sent", t0, task_id="a", name="proj.add", args="[1]", kwargs="{}"),
            _event(2, "worker-online", t0, hostname="w1", pool="threads", concurrency=4),
            _event(3, "task-received", t0 + 1, task_id="a", hostname="w1"),
            _event(4, "task-started", t0 + 1, task_id="a", hostname="w1"),
            _event(5, "task-retried", t0 + 2, task_id="a", hostname="w1", retries=0),
            _event(6, "task-started", t0 + 3, task_id="a", hostname="w1", retries=1),
            _event(7, "task-failed", t0 + 4, task_id="a", exception="KeyError('x')"),
            _event(8, "task-started", t0 + 3.5, task_id="a"),  # late: does not undo
            _event(9, "task-succeeded", t0 + 5, task_id="b", name="proj.mul", result="6"),
        ]
    )
    a = state.tasks["a"]
    assert (a.state, a.name, a.args, a.worker, a.retries) == ("FAILURE", "proj.add", "[1]", "w1", 1)
    assert (a.sent, a.received, a.finished) == (t0, t0 + 1, t0 + 4)
    assert a.exception == "KeyError('x')"
    assert state.tasks["b"].state == "SUCCESS" and state.tasks["b"].result == "6"
    assert [t.id for t in state.recent_tasks()] == ["a", "b"]
    assert [t.id for t in state.find("MUL")] == ["b"]
    assert [t.id for t in state.find("a")] == ["a"]  # by id ("proj.add" has an "a" too)
    assert state.workers["w1"].pool == "threads"
    assert state.last_id == "9"


def test_state_keeps_a_bounded_number_of_tasks() -> None:
    state = State(max_tasks=3)
    for i in range(10):
        state.feed(_event(i, "task-sent", float(i), task_id=f"t{i}"))
    assert list(state.tasks) == ["t7", "t8", "t9"]


def test_worker_alive_from_heartbeats() -> None:
    state = State()
    state.feed(_event(1, "worker-heartbeat", time.time(), hostname="w1", freq=1.0))
    state.feed(_event(2, "worker-heartbeat", time.time() - 60, hostname="w2", freq=1.0))
    state.feed(_event(3, "worker-heartbeat", time.time(), hostname="w3"))
    state.feed(_event(4, "worker-offline", time.time(), hostname="w3"))
    alive = {n: w.alive for n, w in state.workers.items()}
    assert alive == {"w1": True, "w2": False, "w3": False}


def test_events_decode_from_their_stored_form() -> None:
    raw = ev.encode("task-failed", {"task_id": "x", "exception": ValueError("bad")}, 12.5)
    event = Event.decode("7-0", raw)
    assert (event.type, event.time, event.id) == ("task-failed", 12.5, "7-0")
    assert event.fields == {"task_id": "x", "exception": "ValueError('bad')"}
    assert json.loads(raw)["type"] == "task-failed"
