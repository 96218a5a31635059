"""Celery's workers guide, run against real `beatq worker` processes (Redis and SQLite).

Remote control (`app.control.ping/shutdown/rate_limit/purge`), inspection
(`app.control.inspect()` and each of its views), rate limits (declared and set at run
time), and the command-line habits of Celery operators (`purge`, `control`, `inspect`,
`worker --pidfile --logfile -n NAME@%h -O fair`, `beat --pidfile`).
"""

from __future__ import annotations

import time

import pytest

import tests.proj.limited  # noqa: F401  (registers the rate-limited tasks here too)
from beatq import states
from tests.conftest import scaled, stored_messages, wait_for
from tests.journal import journal
from tests.proj import tasks

pytestmark = pytest.mark.backends("redis", "sqlite")


def starts(prefix: str) -> list[float]:
    """When each task whose tag starts with `prefix` started, in order."""
    return sorted(when for tag, when in journal("starts") if tag.startswith(prefix))


# -- remote control ---------------------------------------------------------------------------
def test_ping_answers_for_every_worker_or_the_destination_named(app, start_worker) -> None:
    w0 = start_worker("-P", "threads", "-c", "1")
    w1 = start_worker("-P", "threads", "-c", "1")
    replies = app.control.ping(timeout=scaled(3))
    assert sorted(replies, key=lambda r: next(iter(r))) == [
        {w0.name: {"ok": "pong"}},
        {w1.name: {"ok": "pong"}},
    ]
    assert app.control.ping(destination=[w1.name], timeout=scaled(3)) == [{w1.name: {"ok": "pong"}}]
    assert app.control.inspect(destination=[w0.name], timeout=scaled(3)).ping() == {
        w0.name: {"ok": "pong"}
    }
    began = time.monotonic()
    assert app.control.ping(destination=["nobody@nowhere"], timeout=0.5) == []
    assert time.monotonic() - began >= 0.5  # no answer: the whole timeout was waited
    assert app.control.inspect(destination=["nobody@nowhere"]).active() is None


def test_inspect_shows_what_a_worker_runs_holds_and_knows(app, start_worker) -> None:
    w = start_worker("-P", "threads", "-c", "1", "-Q", "celery,other")
    done = tasks.add.delay(1, 2)
    assert done.get(timeout=scaled(10)) == 3
    long = tasks.sleep.delay(3, "long")
    waiting = [tasks.echo.delay(n) for n in range(2)]
    inspect = app.control.inspect(timeout=scaled(3))

    active = wait_for(lambda: (inspect.active() or {}).get(w.name), 10, "the task to run")
    assert [t["id"] for t in active] == [long.id]
    assert active[0]["name"] == "tests.proj.tasks.sleep" and active[0]["hostname"] == w.name
    assert active[0]["delivery_info"]["routing_key"] == "celery"
    reserved = wait_for(lambda: inspect.reserved()[w.name], 10, "the tasks held behind it")
    assert [t["id"] for t in reserved] == [r.id for r in waiting]
    assert inspect.query_task(long.id, waiting[0].id) == {
        w.name: {
            long.id: ["active", active[0]],
            waiting[0].id: ["reserved", reserved[0]],
        }
    }
    assert "tests.proj.tasks.add" in inspect.registered()[w.name]
    assert [q["name"] for q in inspect.active_queues()[w.name]] == ["celery", "other"]
    stats = inspect.stats()[w.name]
    assert stats["pool"] == {"implementation": "threads", "max-concurrency": 1}
    assert stats["total"] == {"tests.proj.tasks.add": 1}
    assert stats["pid"] == w.pid
    assert inspect.scheduled() == {w.name: []}  # ETA tasks wait in the broker
    app.control.revoke(waiting[1].id)
    assert inspect.revoked() == {w.name: [waiting[1].id]}
    assert long.get(timeout=scaled(10)) == "long"
    assert waiting[0].get(timeout=scaled(10)) == 0
    wait_for(lambda: app.AsyncResult(waiting[1].id).state == states.REVOKED, 10, "revoked")
    with pytest.raises(AttributeError, match="pool_grow is not offered by beatq"):
        app.control.pool_grow(1)


def test_shutdown_stops_a_worker_warmly_and_loses_nothing(app, start_worker) -> None:
    w = start_worker("-c", "1")  # prefork: the child runs one, holds the next ones
    long = tasks.sleep.delay(1.5, "long")
    rest = [tasks.echo.delay(n) for n in range(3)]
    wait_for(lambda: any(e.startswith("long:start") for e in journal("runs")), 10, "the start")
    assert app.control.shutdown(destination=[w.name], reply=True, timeout=scaled(3)) == [
        {w.name: {"ok": "shutting down"}}
    ]
    assert w.wait(15) == 0
    assert "shutdown asked remotely" in w.log()
    assert long.get(timeout=1) == "long"  # the running task finished
    # what it held and had not started went back to its queue, unstarted
    assert sorted(m.id for m in stored_messages(app) if m.state == "ready") == sorted(
        r.id for r in rest
    )
    start_worker("-P", "threads", "-c", "2")
    assert [r.get(timeout=scaled(10)) for r in rest] == [0, 1, 2]


def test_purge_deletes_the_waiting_messages_and_says_how_many(app) -> None:
    for n in range(5):
        tasks.echo.delay(n)
    tasks.echo.apply_async((9,), queue="other")
    tasks.echo.apply_async((8,), countdown=60)  # delayed: kept, as Celery keeps ETA tasks
    assert app.control.purge() == 5  # the app's queues: the default one here
    assert app.control.purge(queues=["other"]) == 1
    assert app.control.purge() == 0
    assert [m.state for m in stored_messages(app)] == ["delayed"]


# -- rate limits ------------------------------------------------------------------------------
def test_a_declared_rate_limit_spaces_the_starts_and_blocks_nothing_else(app, start_worker) -> None:
    start_worker("-P", "threads", "-c", "4")
    limited = [tests.proj.limited.limited.delay(f"lim{n}") for n in range(6)]
    others = [tests.proj.limited.stamp.delay(f"free{n}") for n in range(4)]
    assert [r.get(timeout=scaled(10)) for r in others] == [f"free{n}" for n in range(4)]
    assert [r.get(timeout=scaled(10)) for r in limited] == [f"lim{n}" for n in range(6)]
    times = starts("lim")
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.25 * 0.9, gaps  # 4/s: a quarter second apart, on this worker
    # the free tasks did not wait behind the limited ones
    assert max(starts("free")) < times[-1] - 0.5


def test_rate_limit_at_run_time_slows_a_task_on_live_workers(app, start_worker) -> None:
    w = start_worker("-c", "2")
    name = "tests.proj.limited.stamp"
    assert app.control.rate_limit(name, "2/s", reply=True, timeout=scaled(3)) == [
        {w.name: {"ok": "new rate limit set successfully"}}
    ]
    results = [tests.proj.limited.stamp.delay(f"slow{n}") for n in range(4)]
    assert [r.get(timeout=scaled(10)) for r in results] == [f"slow{n}" for n in range(4)]
    times = starts("slow")
    assert times[-1] - times[0] >= 1.5 * 0.9  # 2/s: four starts take 1.5 s
    assert app.control.inspect().stats()[w.name]["rate_limits"][name] == 2.0
    # lifted: the next ones run at once
    app.control.rate_limit(name, None, reply=True, timeout=scaled(3))
    fast = [tests.proj.limited.stamp.delay(f"fast{n}") for n in range(4)]
    assert [r.get(timeout=scaled(10)) for r in fast] == [f"fast{n}" for n in range(4)]
    times = starts("fast")
    assert times[-1] - times[0] < 0.5
    # a bad rate or an unknown task: one clear error, nothing set
    with pytest.raises(ValueError, match="invalid rate limit '5/fortnight'"):
        app.control.rate_limit(name, "5/fortnight")
    assert app.control.rate_limit("no.such.task", "1/s", reply=True, timeout=scaled(3)) == [
        {w.name: {"error": "unknown task 'no.such.task'"}}
    ]


def test_rate_limited_tasks_waiting_in_a_killed_worker_are_not_lost(app, start_worker) -> None:
    visibility = {"BEATQ_TEST_VISIBILITY": "2"}
    w = start_worker("-P", "threads", "-c", "2", extra_env=visibility)
    results = [tests.proj.limited.limited.delay(f"kill{n}") for n in range(12)]
    wait_for(lambda: len(starts("kill")) >= 2, 10, "the first starts")
    w.process.kill()
    w.process.wait()
    start_worker("-P", "threads", "-c", "2", extra_env=visibility)
    assert [r.get(timeout=scaled(20)) for r in results] == [f"kill{n}" for n in range(12)]


def test_an_invalid_rate_limit_is_refused_where_the_task_is_declared(app) -> None:
    with pytest.raises(ValueError, match=r"task .*bad: invalid rate limit '10/fortnight'"):

        @app.task(name="bad", rate_limit="10/fortnight")
        def bad() -> None: ...

    for good in ("10/s", "100/m", "1000/h", 5, 0.5, "7"):

        @app.task(name=f"good-{good}", rate_limit=good)
        def fine() -> None: ...
