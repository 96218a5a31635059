"""Operations from the terminal: `status`, `revoke`, `inspect reserved|stats` and `events`,
run as real `python -m beatq` processes against real workers."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT, scaled, wait_for
from tests.proj import journal
from tests.test_cli import TIME_WITH_OFFSET, beatq, call_id, show


@pytest.mark.backends("redis", "sqlite")
def test_status_exit_code_follows_the_live_workers(app, start_worker, env):
    proc = beatq(env, "status")
    assert proc.returncode == 1, show(proc)
    assert proc.stdout.splitlines()[-1] == "0 workers alive"  # after the backend's lines

    worker = start_worker("-P", "threads", "-c", "3", "-Q", "celery,other")
    proc = beatq(env, "status")
    assert proc.returncode == 0, show(proc)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("-> ")]
    url = env["BEATQ_BROKER_URL"]
    assert re.match(
        rf"^-> {worker.name}: OK  pool threads×3, active 0, processed \d+, "
        rf"queues celery,other, up since {TIME_WITH_OFFSET}, broker {re.escape(url)}$",
        lines[0],
    ), show(proc)
    assert proc.stdout.splitlines()[-1] == "1 worker alive"
    workers = json.loads(beatq(env, "status", "--json").stdout)["workers"]
    assert workers[worker.name]["pool"] == "threads" and workers[worker.name]["queues"] == [
        "celery",
        "other",
    ]

    worker.stop()  # a clean stop unregisters at once
    assert beatq(env, "status").returncode == 1


def test_status_exits_4_when_the_broker_is_unreachable(env):
    proc = beatq({**env, "BEATQ_BROKER_URL": "redis://127.0.0.1:1/0"}, "status")
    assert proc.returncode == 4, show(proc)
    assert proc.stderr.startswith("Error: Redis at redis://127.0.0.1:1/0 is unreachable")


def test_inspect_reserved_lists_claimed_tasks_waiting_for_a_slot(app, start_worker, env):
    from tests.proj.tasks import add, sleep

    # sent first, so the worker's first claim (4 = 1 slot × prefetch 4) takes them all
    blocker = sleep.delay(30, "b").id
    waiting = [add.delay(i, 1).id for i in range(3)]
    worker = start_worker("-P", "threads", "-c", "1", "--prefetch-multiplier", "4")

    def reserved() -> list[str]:
        info = json.loads(app.broker.workers().get(worker.name) or b"{}")
        return [t["id"] for t in info.get("reserved_tasks", [])]

    wait_for(lambda: reserved() == waiting, 10, "the three add tasks to be reserved")
    proc = beatq(env, "inspect", "reserved")
    assert proc.returncode == 0, show(proc)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"-> {worker.name}"
    assert lines[1:] == [
        f"   tests.proj.tasks.add[{w}] [{i}, 1] {{}}" for i, w in enumerate(waiting)
    ]
    data = json.loads(beatq(env, "inspect", "reserved", "--json").stdout)
    assert [t["id"] for t in data[worker.name]] == waiting
    assert blocker not in reserved()

    stats = json.loads(beatq(env, "inspect", "stats", "--json").stdout)[worker.name]
    assert stats["pool"] == "threads" and stats["prefetch_count"] == 4
    assert stats["reserved"] == 3 and stats["processed"] == 0
    assert stats["rusage"]["maxrss_kb"] > 0 and stats["events"] is False
    assert "reserved_tasks" not in stats and "registered" not in stats
    # an instant is a number named *_ts in JSON, the app's time with its offset as text
    assert isinstance(stats["started_ts"], float) and "started" not in stats
    text = beatq(env, "inspect", "stats").stdout.splitlines()
    assert any(re.fullmatch(rf"   started: {TIME_WITH_OFFSET}", line) for line in text), text


@pytest.mark.backends("redis", "sqlite")
def test_revoke_terminate_from_the_command_line(app, start_worker, env):
    from tests.proj.tasks import add

    start_worker("-P", "prefork", "-c", "1")
    task_id = call_id(env, "tests.proj.tasks.sleep", "--args", "[30]", "--kwargs", '{"tag": "r"}')
    wait_for(lambda: any(r.startswith("r:start") for r in journal("runs")), 10, "the start")
    proc = beatq(env, "revoke", "--terminate", task_id)
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.strip() == f"revoked and terminating: {task_id}"
    proc = beatq(env, "result", task_id, "--wait", "--timeout", "10")
    assert proc.returncode == 1, show(proc)
    assert "REVOKED" in proc.stdout + proc.stderr
    assert add.delay(1, 1).get(timeout=scaled(10)) == 2, "a new child serves the next task"


def test_revoke_needs_an_id(env):
    proc = beatq(env, "revoke")
    assert proc.returncode == 2
    assert "Missing argument 'ID...'" in proc.stderr


@pytest.mark.backends("redis", "sqlite")
def test_events_dump_prints_one_event_per_line(app, start_worker, env):
    worker = start_worker("-E", "-P", "threads")
    from tests.proj.tasks import add

    result = add.delay(20, 22)
    assert result.get(timeout=scaled(10)) == 42
    later = add.apply_async((1, 1), countdown=0.5)  # its events carry an eta
    assert later.get(timeout=scaled(10)) == 2
    wait_for(lambda: len(app.events.recent(1000)) >= 4, 10, "the events")
    proc = beatq(env, "events", "--dump", "--no-follow")
    assert proc.returncode == 0, show(proc)
    mine = [line for line in proc.stdout.splitlines() if f"task_id={result.id}" in line]
    assert [line.split()[2] for line in mine] == [
        "task-received",
        "task-started",
        "task-succeeded",
    ], show(proc)
    assert re.match(rf"^{TIME_WITH_OFFSET} task-succeeded task_id={result.id} ", mine[-1])
    assert "result=42" in mine[-1] and f"hostname={worker.name}" in mine[-1]
    assert any(" worker-online " in line for line in proc.stdout.splitlines())
    received = next(
        line
        for line in proc.stdout.splitlines()
        if f"task_id={later.id}" in line and " task-received " in line
    )
    assert re.search(rf" eta={TIME_WITH_OFFSET}( |$)", received), received

    proc = beatq(env, "events", "--dump", "--no-follow", "--json")
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    done = [r for r in records if r.get("task_id") == result.id and r["type"] == "task-succeeded"]
    assert done[0]["result"] == "42" and done[0]["id"]
    assert isinstance(done[0]["time_ts"], float) and "time" not in done[0]
    (got,) = [r for r in records if r.get("task_id") == later.id and r["type"] == "task-received"]
    assert got["eta_ts"] > got["time_ts"] - 1 and "eta" not in got


def ctrl_c_on() -> None:
    """In the child, before it runs: Ctrl-C's default action. A shell starts a background
    job (this suite run as `cmd &`) with SIGINT ignored, the child would inherit that, and
    Python then never raises KeyboardInterrupt: the command would not stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_events_dump_follows_new_events(app, start_worker, env):
    start_worker("-E", "-P", "threads")
    argv = [sys.executable, "-m", "beatq", "-A", "tests.proj", "events", "--dump", "--new"]
    dump = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=ctrl_c_on
    )
    try:
        assert dump.stdout is not None
        first = dump.stdout.readline()  # the dump runs: a heartbeat came after it started
        assert " worker-heartbeat " in first, first
        from tests.proj.tasks import add

        result = add.delay(1, 1)
        seen: list[str] = []
        while not any("task-succeeded" in line for line in seen):
            line = dump.stdout.readline()
            assert line, "the dump stopped"
            seen.append(line)
        assert any(f"task-received task_id={result.id}" in line for line in seen)
    finally:
        dump.send_signal(signal.SIGINT)
        # read on while it stops: a pipe nobody reads could hold its last writes back
        dump.communicate(timeout=scaled(10))
    assert dump.returncode == 0


@pytest.mark.parametrize("events_on", [True, False])
def test_events_live_view_shows_workers_queues_and_tasks(app, start_worker, env, events_on):
    from tests.proj.tasks import add, fail

    worker = start_worker(*(["-E"] if events_on else []), "-P", "threads")
    add.delay(2, 3).get(timeout=scaled(10))
    fail.delay("bad").get(timeout=scaled(10), propagate=False)
    argv = [sys.executable, "-m", "beatq", "-A", "tests.proj", "events", "--interval", "0.2"]
    # a screen wide enough for whole lines, whatever COLUMNS this run inherited
    wide = {**env, "COLUMNS": "160", "LINES": "40"}
    view = subprocess.Popen(
        argv, env=wide, cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=ctrl_c_on
    )
    header = "beatq tests.proj — "
    try:
        screen: list[str] = []
        assert view.stdout is not None
        while len([line for line in screen if line.startswith(header)]) < 3:
            line = view.stdout.readline()
            assert line, "the view stopped"
            screen.append(line)
    finally:
        view.send_signal(signal.SIGINT)
        view.communicate(timeout=scaled(10))
    last = "".join(screen).split(header)[-2]  # a whole screen
    assert "Workers (1 alive)" in last
    assert re.search(rf"  {worker.name} +threads×\d+ +active 0 ", last), last
    assert re.search(r"  celery +0\n", last), last
    if events_on:
        assert re.search(r"SUCCESS  tests\.proj\.tasks\.add\[.*\] [\d.]+s 5", last), last
        assert re.search(r"FAILURE  tests\.proj\.tasks\.fail\[.*CustomError\('bad'\)", last), last
    else:
        assert "no task events yet: start workers with -E" in last


@pytest.mark.parametrize("command", [["events", "--dump"], ["status"], ["revoke", "x"]])
def test_commands_refuse_a_memory_broker(env, command):
    proc = beatq({**env, "BEATQ_BROKER_URL": "memory://"}, *command)
    assert proc.returncode == 2, show(proc)
    assert proc.stderr.strip() == (
        f"Error: {command[0]} needs a broker other processes share; memory:// lives inside "
        "one process: use sqlite:// or redis:// (-b URL or BEATQ_BROKER_URL)"
    )
