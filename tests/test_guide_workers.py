"""Celery's workers guide, run against real `beatq worker` processes (Redis and SQLite).

Remote control (`app.control.ping/shutdown/rate_limit/purge`), inspection
(`app.control.inspect()` and each of its views), rate limits (declared and set at run
time), and the command-line habits of Celery operators (`purge`, `control`, `inspect`,
`worker --pidfile --logfile -n NAME@%h -O fair`, `beat --pidfile`).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import tests.proj.limited  # noqa: F401  (registers the rate-limited tasks here too)
from beatq import states
from beatq.cli.process import expand
from beatq.exceptions import ConfigurationError
from tests.conftest import ROOT, WorkerProcess, scaled, stored_messages, wait_for
from tests.journal import journal
from tests.proj import tasks

pytestmark = pytest.mark.backends("redis", "sqlite")


def starts(prefix: str) -> list[float]:
    """When each task whose tag starts with `prefix` started, in order."""
    return sorted(when for tag, when in journal("starts") if tag.startswith(prefix))


# -- remote control ---------------------------------------------------------------------------
@pytest.mark.backends("redis", "sqlite", "memory")
def test_ping_answers_for_every_worker_or_the_destination_named(app, start_worker) -> None:
    w0 = start_worker("-P", "threads", "-c", "1")
    w1 = start_worker("-P", "threads", "-c", "1")
    replies = app.control.ping(timeout=scaled(10))
    assert sorted(replies, key=lambda r: next(iter(r))) == [
        {w0.name: {"ok": "pong"}},
        {w1.name: {"ok": "pong"}},
    ]
    assert app.control.ping(destination=[w1.name], timeout=scaled(10)) == [
        {w1.name: {"ok": "pong"}}
    ]
    assert app.control.inspect(destination=[w0.name], timeout=scaled(10)).ping() == {
        w0.name: {"ok": "pong"}
    }
    heard = []  # Celery's callback: each reply as it comes
    replies = app.control.ping(timeout=scaled(10), callback=heard.append)
    assert sorted(heard, key=lambda r: next(iter(r))) == sorted(
        replies, key=lambda r: next(iter(r))
    )
    assert len(heard) == 2
    began = time.monotonic()
    assert app.control.ping(destination=["nobody@nowhere"], timeout=0.5) == []
    assert time.monotonic() - began >= 0.5  # no answer: the whole timeout was waited
    assert app.control.inspect(destination=["nobody@nowhere"]).active() is None


@pytest.mark.backends("redis", "sqlite", "memory")
def test_inspect_shows_what_a_worker_runs_holds_and_knows(app, start_worker) -> None:
    w = start_worker("-P", "threads", "-c", "1", "-Q", "celery,other")
    done = tasks.add.delay(1, 2)
    assert done.get(timeout=scaled(10)) == 3
    long = tasks.sleep.delay(3, "long")
    waiting = [tasks.echo.delay(n) for n in range(2)]
    inspect = app.control.inspect(timeout=scaled(10))

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
    assert app.control.shutdown(destination=[w.name], reply=True, timeout=scaled(10)) == [
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


@pytest.mark.backends("redis", "sqlite", "memory")
def test_purge_deletes_the_waiting_messages_and_says_how_many(app) -> None:
    for n in range(5):
        tasks.echo.delay(n)
    tasks.echo.apply_async((9,), queue="other")
    tasks.echo.apply_async((8,), countdown=60)  # delayed: kept, as Celery keeps ETA tasks
    assert app.control.purge() == 5  # the app's queues: the default one here
    assert app.control.purge(queues=["other"]) == 1
    assert app.control.purge() == 0
    assert [m.state for m in stored_messages(app)] == ["delayed"]


# the workers of the rate-limit tests load the limited tasks (see tests/proj/__init__.py)
INCLUDE = {"BEATQ_TEST_INCLUDE": "tests.proj.limited"}
# ... and tests.proj.limited.limited's rate limit (none in this process: the in-process
# workers of memory:// are left off the throttle's path)
LIMITED = {**INCLUDE, "BEATQ_TEST_RATE_LIMIT": "4/s"}


# -- rate limits ------------------------------------------------------------------------------
# every pool: the unlimited tasks still go straight to a free slot (Handoff.follow, solo's
# folded acknowledgement), the limited ones through the worker's main thread
@pytest.mark.parametrize("pool", ["threads -c 4", "solo", "prefork -c 2"])
def test_a_declared_rate_limit_spaces_the_starts_and_blocks_nothing_else(
    app, start_worker, pool
) -> None:
    start_worker("-P", *pool.split(), extra_env=LIMITED)
    limited = [tests.proj.limited.limited.delay(f"lim{n}") for n in range(6)]
    others = [tests.proj.limited.stamp.delay(f"free{n}") for n in range(4)]
    assert [r.get(timeout=scaled(10)) for r in others] == [f"free{n}" for n in range(4)]
    assert [r.get(timeout=scaled(10)) for r in limited] == [f"lim{n}" for n in range(6)]
    times = starts("lim")
    # 4/s: between any two starts, a quarter second per start between them, less one: a
    # start stamped late on a loaded machine shortens the gaps it begins (seen: the first
    # one, 0.05 s late); an unlimited or doubled rate still fails (6 starts in < 1 s)
    gaps = [(j - i, times[j] - times[i]) for i in range(6) for j in range(i + 1, 6)]
    assert all(took >= (n - 1) * 0.25 * 0.9 for n, took in gaps), times
    # the free tasks did not wait behind the limited ones
    assert max(starts("free")) < times[-1] - 0.5


@pytest.mark.backends("redis", "sqlite", "memory")
def test_rate_limit_at_run_time_slows_a_task_on_live_workers(app, backend, start_worker) -> None:
    w = start_worker("-c", "2", extra_env=None if backend == "memory" else INCLUDE)
    name = "tests.proj.limited.stamp"
    assert app.control.rate_limit(name, "2/s", reply=True, timeout=scaled(10)) == [
        {w.name: {"ok": "new rate limit set successfully"}}
    ]
    results = [tests.proj.limited.stamp.delay(f"slow{n}") for n in range(4)]
    assert [r.get(timeout=scaled(10)) for r in results] == [f"slow{n}" for n in range(4)]
    times = starts("slow")
    assert times[-1] - times[0] >= 1.5 * 0.9  # 2/s: four starts take 1.5 s
    assert app.control.inspect().stats()[w.name]["rate_limits"][name] == 2.0
    # lifted: the next ones run at once
    app.control.rate_limit(name, None, reply=True, timeout=scaled(10))
    fast = [tests.proj.limited.stamp.delay(f"fast{n}") for n in range(4)]
    assert [r.get(timeout=scaled(10)) for r in fast] == [f"fast{n}" for n in range(4)]
    times = starts("fast")
    assert times[-1] - times[0] < 0.5
    # a bad rate or an unknown task: one clear error, nothing set
    with pytest.raises(ValueError, match="invalid rate limit '5/fortnight'"):
        app.control.rate_limit(name, "5/fortnight")
    assert app.control.rate_limit("no.such.task", "1/s", reply=True, timeout=scaled(10)) == [
        {w.name: {"error": "unknown task 'no.such.task'"}}
    ]


def test_rate_limited_tasks_waiting_in_a_killed_worker_are_not_lost(app, start_worker) -> None:
    visibility = {"BEATQ_TEST_VISIBILITY": "2", **LIMITED}
    w = start_worker("-P", "threads", "-c", "2", extra_env=visibility)
    results = [tests.proj.limited.limited.delay(f"kill{n}") for n in range(12)]
    wait_for(lambda: len(starts("kill")) >= 2, 10, "the first starts")
    w.process.kill()
    w.process.wait()
    start_worker("-P", "threads", "-c", "2", extra_env=visibility)
    assert [r.get(timeout=scaled(20)) for r in results] == [f"kill{n}" for n in range(12)]
    # none was lost: each ran (the one running at the kill, if any, ran again: acks_late)
    assert {tag for tag, _ in journal("starts")} == {f"kill{n}" for n in range(12)}


def test_past_its_prefetch_a_worker_leaves_rate_limited_tasks_in_the_broker(
    app, start_worker
) -> None:
    # prefetch 1: the worker holds one task waiting its turn; the others wait in the
    # broker, delayed until about their turn, where they are not lost to a dead worker
    start_worker("-P", "threads", "-c", "1", "--prefetch-multiplier", "1", extra_env=LIMITED)
    results = [tests.proj.limited.limited.delay(f"cap{n}") for n in range(8)]
    wait_for(lambda: any(m.state == "delayed" for m in stored_messages(app)), 10, "one given back")
    assert [r.get(timeout=scaled(20)) for r in results] == [f"cap{n}" for n in range(8)]
    times = starts("cap")
    assert len(times) == 8  # each ran once
    offsets = [t - times[0] for t in times]  # as spaced as above, in order
    assert all(o >= k * 0.25 * 0.9 for k, o in enumerate(offsets)), offsets


def test_an_invalid_rate_limit_is_refused_where_the_task_is_declared(app) -> None:
    with pytest.raises(ValueError, match=r"task .*bad: invalid rate limit '10/fortnight'"):

        @app.task(name="bad", rate_limit="10/fortnight")
        def bad() -> None: ...

    for good in ("10/s", "100/m", "1000/h", 5, 0.5, "7"):

        @app.task(name=f"good-{good}", rate_limit=good)
        def fine() -> None: ...


def test_worker_settings_from_an_included_module_and_celeryd_init_count(app, start_worker) -> None:
    # a Celery project sets worker settings in a module it includes, or per worker in a
    # celeryd_init receiver: both are in place before the worker sizes its pool
    w = start_worker(
        "-P", "threads", extra_env={"BEATQ_TEST_INCLUDE": "tests.proj.included_settings"}
    )
    stats = app.control.inspect(timeout=scaled(10)).stats()[w.name]
    assert stats["pool"] == {"implementation": "threads", "max-concurrency": 3}
    assert stats["prefetch_count"] == 15


# -- the command line -------------------------------------------------------------------------
def beatq(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beatq", "-A", "tests.proj", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )


def test_control_and_inspect_from_the_command_line(app, env, start_worker) -> None:
    w = start_worker("-P", "threads", "-c", "1", extra_env=INCLUDE)
    ping = beatq(env, "control", "ping", "-d", w.name, "-t", str(scaled(10)))
    assert ping.returncode == 0, ping.stderr
    assert ping.stdout.splitlines() == [f"-> {w.name}: OK pong", "1 node online."]
    nobody = beatq(env, "control", "ping", "-d", "nobody@nowhere", "-t", "0.3")
    assert nobody.returncode == 1 and "no worker replied" in nobody.stderr
    assert beatq(env, "inspect", "ping", "-t", str(scaled(10))).stdout == f"-> {w.name}: OK pong\n"
    registered = beatq(env, "inspect", "registered", "-d", w.name, "--json")
    assert "tests.proj.tasks.add" in json.loads(registered.stdout)[w.name]
    assert beatq(env, "inspect", "registered", "-d", "nobody@nowhere").returncode == 1
    assert beatq(env, "inspect", "scheduled", "-d", w.name).returncode == 2
    queues = beatq(env, "inspect", "active_queues")
    assert queues.stdout.splitlines() == [f"-> {w.name}", "   celery"]

    limit = beatq(
        env, "control", "rate_limit", "tests.proj.limited.stamp", "2/s", "-t", str(scaled(10))
    )
    assert limit.stdout.splitlines()[0] == f"-> {w.name}: OK new rate limit set successfully"
    bad = beatq(env, "control", "rate_limit", "tests.proj.limited.stamp", "2/fortnight")
    assert bad.returncode == 2 and "invalid rate limit '2/fortnight'" in bad.stderr
    results = [tests.proj.limited.stamp.delay(f"cli{n}") for n in range(3)]
    assert [r.get(timeout=scaled(10)) for r in results] == ["cli0", "cli1", "cli2"]
    times = starts("cli")
    assert times[-1] - times[0] >= 1.0 * 0.9  # 2/s

    long = tasks.sleep.delay(3, "long")
    wait_for(lambda: (app.control.inspect().active() or {}).get(w.name), 10, "the task to run")
    found = beatq(env, "inspect", "query_task", long.id, "--json")
    assert json.loads(found.stdout)[w.name][long.id][0] == "active"

    down = beatq(env, "control", "shutdown", "-d", w.name, "-t", str(scaled(10)))
    assert down.stdout.splitlines()[0] == f"-> {w.name}: OK shutting down"
    assert w.wait(15) == 0
    assert long.get(timeout=1) == "long"


def test_purge_from_the_command_line_asks_first(app, env) -> None:
    for n in range(3):
        tasks.echo.delay(n)
    for n in range(2):
        tasks.echo.apply_async((n,), queue="other")
    forced = beatq(env, "purge", "-Q", "other", "-f")
    assert forced.returncode == 0 and forced.stdout == "Purged 2 messages from other.\n"
    declined = beatq(env, "purge", stdin="n\n")
    assert declined.returncode == 1 and "Aborted" in declined.stderr
    assert len(stored_messages(app)) == 3  # nothing deleted
    agreed = beatq(env, "purge", stdin="y\n")
    assert agreed.returncode == 0 and agreed.stdout.endswith("Purged 3 messages from celery.\n")
    assert stored_messages(app) == []


def test_node_names_expand_as_celery_expands_them() -> None:
    host = "george.example.com"
    assert expand("worker1@%h", hostname=host) == "worker1@george.example.com"
    assert expand("worker1@%n", hostname=host) == "worker1@george"
    assert expand("worker1@%d", hostname=host) == "worker1@example.com"
    assert expand("/var/log/%p.log", "w1@george", host) == "/var/log/w1@george.log"
    assert expand("100%%", hostname=host) == "100%"
    with pytest.raises(ConfigurationError, match="%i .*is not offered"):
        expand("/var/log/%n%i.log", hostname=host)
    with pytest.raises(ConfigurationError, match="unknown %x"):
        expand("w@%x", hostname=host)


def test_worker_pidfile_logfile_and_name(app, env, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    pidfile, logfile = tmp_path / "w.pid", tmp_path / "%n.log"
    args = ["worker", "-P", "threads", "-c", "1", "-n", f"w{tag}@%h", "-O", "fair"]
    args += ["--pidfile", str(pidfile), "--logfile", str(logfile)]
    w = WorkerProcess(["-A", "tests.proj", *args], env, tmp_path / "out.log")
    name = f"w{tag}@{socket.gethostname()}"
    try:
        wait_for(lambda: name in app.broker.workers() or w.process.poll() is not None, 60)
        assert pidfile.read_text() == f"{w.pid}\n"
        written = tmp_path / f"{socket.gethostname().partition('.')[0]}.log"
        assert f"worker {name} ready" in written.read_text()
        assert tasks.add.delay(2, 3).get(timeout=scaled(10)) == 5
        second = beatq(env, *args)  # the same pidfile: refused while the first runs
        assert second.returncode == 2
        assert f"pidfile {pidfile} names process {w.pid}, which is running" in second.stderr
    finally:
        w.stop()
    assert w.process.returncode == 0
    assert not pidfile.exists()  # removed on exit


def test_worker_options_beatq_does_not_offer_are_refused(env) -> None:
    other = beatq(env, "worker", "-O", "default")
    assert other.returncode == 2 and "beatq always hands a task to a free pool" in other.stderr
    for option in ("--max-tasks-per-child", "--max-memory-per-child"):
        refused = beatq(env, "worker", "-P", "threads", option, "10")
        assert refused.returncode == 2
        assert "pool threads has none: use -P prefork" in refused.stderr


def child_pids(tags: list[str]) -> dict[str, int]:
    """The pid of the child that started each tag's run (tests.proj.tasks.sleep's journal)."""
    found: dict[str, int] = {}
    for entry in journal("runs"):
        tag, what, pid = entry.split(":")
        if what == "start" and tag in tags:
            assert tag not in found, f"{tag} ran twice"
            found[tag] = int(pid)
    return found


def test_max_tasks_per_child_replaces_a_child_and_runs_every_task_once(app, start_worker) -> None:
    w = start_worker("-c", "1", "--max-tasks-per-child", "2")
    tags = [f"r{n}" for n in range(7)]
    results = [tasks.sleep.delay(0.05, tag) for tag in tags]
    assert [r.get(timeout=scaled(20)) for r in results] == tags
    pids = child_pids(tags)
    assert sorted(pids) == sorted(tags)  # each ran, once
    per_child = [list(pids.values()).count(pid) for pid in dict.fromkeys(pids.values())]
    assert per_child == [2, 2, 2, 1], pids  # one child after another, two tasks each
    assert w.pid not in pids.values()
    assert "exited (code 0)" in w.log()


def test_max_memory_per_child_replaces_a_child_after_the_task(app, start_worker) -> None:
    start_worker("-c", "1", "--max-memory-per-child", "1")  # 1 KiB: every child is past it
    tags = [f"m{n}" for n in range(3)]
    results = [tasks.sleep.delay(0.05, tag) for tag in tags]
    assert [r.get(timeout=scaled(20)) for r in results] == tags
    assert len(set(child_pids(tags).values())) == 3  # a new child for each


def test_beat_pidfile_keeps_a_second_beat_from_starting(app, env, tmp_path: Path) -> None:
    pidfile = tmp_path / "beat.pid"
    schedule = tmp_path / "none.yaml"
    schedule.write_text("schedules: {}\n")
    args = ["beat", "-s", str(schedule), "--pidfile", str(pidfile), "-l", "info"]
    first = WorkerProcess(["-A", "tests.proj", *args], env, tmp_path / "beat.log")
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().endswith("\n"), 60)
        assert pidfile.read_text() == f"{first.pid}\n"
        second = beatq(env, *args)
        assert second.returncode == 2 and "which is running" in second.stderr
    finally:
        first.signal(signal.SIGTERM)
        first.wait(15)
        first.stop()
    assert not pidfile.exists()
    pidfile.write_text("999999999\n")  # left by a process long gone: replaced
    third = WorkerProcess(["-A", "tests.proj", *args], env, tmp_path / "beat3.log")
    try:
        # the stale file is removed, then made anew exclusively: absent for a moment
        def holds_third() -> bool:
            try:
                return pidfile.read_text() == f"{third.pid}\n"
            except FileNotFoundError:
                return False

        wait_for(holds_third, 60, "the stale pidfile replaced")
    finally:
        third.stop()
