"""A project written as Celery projects are (tests/proj_celery), run by real beatq workers.

Its shared tasks (autodiscovered in a sub-package too), class-based tasks, base= hooks,
signal receivers, update_state and periodic tasks (beat_schedule and add_periodic_task),
on Redis and SQLite. The tests' own process sends through a plain client
app and never imports the project: only the worker processes hold its receivers.
Hooks and receivers journal to one kind ("trace") in the order they ran.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from beatq import AsyncResult, Beatq, context, signals
from beatq.brokers import Outgoing
from tests.conftest import WorkerProcess, scaled, wait_for, wait_ready
from tests.journal import journal

pytestmark = pytest.mark.backends("redis", "sqlite")

PROJ = "tests.proj_celery"
ADD = f"{PROJ}.tasks.add"


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[Beatq]:
    """A plain app in the tests' process, on the test's store (the project's key prefix)."""
    app = Beatq("client")
    app.conf.broker_transport_options = {
        "global_keyprefix": env["BEATQ_TEST_PREFIX"],
        "visibility_timeout": 60.0,
    }
    yield app
    app.close()
    context._current[:] = [a for a in context._current if a is not app]


@pytest.fixture
def start(
    client: Beatq, env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `beatq -A tests.proj_celery COMMAND ARGS...`; a worker is waited for."""
    started: list[WorkerProcess] = []

    def run(*args: str, command: str = "worker") -> WorkerProcess:
        name = f"pc{len(started)}-{uuid.uuid4().hex[:6]}"
        named = ["-n", name] if command == "worker" else []
        proc = WorkerProcess(["-A", PROJ, command, *named, *args], env, tmp_path / f"{name}.log")
        started.append(proc)
        if command == "worker":
            wait_ready(client.broker, name, lambda: proc.process.poll() is None, proc.log)
        proc.name = name  # type: ignore[attr-defined]
        return proc

    yield run
    for proc in started:
        proc.stop()


def trace(task_id: str | None = None) -> list[dict]:
    """The hooks and signals journaled (for `task_id` only, if given), in the order run."""
    entries = journal("trace")
    if task_id is None:
        return entries
    keys = ("id", "task_id", "request", "current", "headers")
    return [e for e in entries if any(e.get(k) == task_id for k in keys)]


def hooks_of(task_id: str) -> list[dict]:
    return [e for e in trace(task_id) if "hook" in e]


def steps(entries: list[dict]) -> list[str]:
    return [e.get("hook") or e["signal"] for e in entries]


def runs_of(task: str) -> list[dict]:
    return [r for r in journal("runs") if r["task"] == task]


def test_shared_and_class_based_tasks_run_with_their_hooks_in_the_prefork_child(
    client: Beatq, start: Callable[..., WorkerProcess]
) -> None:
    worker = start("-P", "prefork", "-c", "1")
    added = client.send_task(ADD, (2, 3))
    assert added.get(timeout=scaled(20)) == 5
    # a shared task made before the app existed, and class-based tasks, named and not
    assert client.send_task(f"{PROJ}.reusable.double", (21,)).get(timeout=scaled(20)) == 42
    product = client.send_task(f"{PROJ}.multiply", (6, 7))
    assert product.get(timeout=scaled(20)) == 42
    plain = client.send_task(f"{PROJ}.tasks.Plain")
    assert plain.get(timeout=scaled(20)) == f"{PROJ}.tasks.Plain"
    # the sub-package app's tasks, found by autodiscover_tasks (listed nowhere else)
    invoiced = client.send_task(f"{PROJ}.billing.tasks.invoice", (12,))
    assert invoiced.get(timeout=scaled(20)) == "invoiced 12"

    child = runs_of("add")[0]["pid"]
    assert child != worker.pid
    assert runs_of("multiply")[0]["late"] is True  # a class attribute is the task's option

    wanted = ["before_start", "on_success", "after_return"]
    hooks = wait_for(lambda: (h := hooks_of(added.id)) and len(h) >= 3 and h, 10, "hooks")
    assert [h["hook"] for h in hooks] == wanted
    assert {h["pid"] for h in hooks} == {child}  # in the process that ran the task
    assert {h["request_id"] for h in hooks} == {added.id}  # self.request is the run's
    assert hooks[0]["args"] == [2, 3]
    assert hooks[1]["retval"] == 5
    assert (hooks[2]["status"], hooks[2]["retval"]) == ("SUCCESS", "5")
    class_hooks = wait_for(lambda: (h := hooks_of(product.id)) and len(h) >= 3 and h)
    assert [h["hook"] for h in class_hooks] == wanted


def test_failure_and_retry_run_their_hooks_and_signals_in_celerys_order(
    client: Beatq, start: Callable[..., WorkerProcess]
) -> None:
    start("-P", "prefork", "-c", "1")
    failed = client.send_task(f"{PROJ}.tasks.fail", ("nope",))
    with pytest.raises(Exception) as raised:
        failed.get(timeout=scaled(20))
    assert (type(raised.value).__name__, str(raised.value)) == ("Refused", "nope")
    expected = [
        "task_received",
        "task_prerun",
        "before_start",
        "on_failure",
        "task_failure",
        "after_return",
        "task_postrun",
    ]
    entries = wait_for(lambda: (t := trace(failed.id)) and len(t) >= len(expected) and t)
    assert steps(entries) == expected
    on_failure = entries[3]
    assert on_failure["exc"] == "Refused: nope"
    assert on_failure["einfo_type"] == "ExceptionInfo"
    assert on_failure["traceback_tail"] == f"{PROJ}.tasks.Refused: nope"
    assert entries[4]["exception"] == "Refused('nope')" and entries[4]["einfo"] == "ExceptionInfo"
    assert entries[5]["status"] == "FAILURE"
    assert entries[6]["state"] == "FAILURE"

    retried = client.send_task(f"{PROJ}.tasks.retry_once")
    assert retried.get(timeout=scaled(20)) == "retried 1"
    first = [
        "task_received",
        "task_prerun",
        "before_start",
        "before_task_publish",  # the retry's message, sent from the worker (the child)
        "after_task_publish",
        "on_retry",
        "task_retry",
        "task_postrun",
    ]
    second = [
        "task_received",
        "task_prerun",
        "before_start",
        "on_success",
        "task_success",
        "after_return",
        "task_postrun",
    ]
    entries = wait_for(lambda: (t := trace(retried.id)) and len(t) >= 15 and t)
    assert steps(entries) == first + second
    on_retry = entries[steps(entries).index("on_retry")]
    assert on_retry["exc"] == "Refused: first try"
    assert entries[steps(entries).index("task_retry")]["reason"] == "Retry"


def test_task_signals_fire_in_the_process_celery_fires_them_in(
    client: Beatq, start: Callable[..., WorkerProcess]
) -> None:
    worker = start("-P", "prefork", "-c", "1")
    published: list[tuple[str, dict]] = []

    def before(sender=None, headers=None, body=None, routing_key=None, **kwargs):
        published.append(("before", {"sender": sender, "id": headers["id"], "args": body[0]}))

    def after(sender=None, headers=None, routing_key=None, **kwargs):
        published.append(("after", {"sender": sender, "id": headers["id"], "queue": routing_key}))

    signals.before_task_publish.connect(before, sender=ADD, weak=False)
    signals.after_task_publish.connect(after, sender=ADD, weak=False)
    try:
        added = client.send_task(ADD, (4, 4))
        client.send_task(f"{PROJ}.tasks.tick")  # another sender: not for these receivers
    finally:
        signals.before_task_publish.disconnect(before, sender=ADD)
        signals.after_task_publish.disconnect(after, sender=ADD)
    assert published == [
        ("before", {"sender": ADD, "id": added.id, "args": [4, 4]}),
        ("after", {"sender": ADD, "id": added.id, "queue": "celery"}),
    ]
    assert added.get(timeout=scaled(20)) == 8

    entries = wait_for(lambda: (t := trace(added.id)) and len(t) >= 7 and t)
    assert steps(entries) == [
        "task_received",
        "task_prerun",
        "before_start",
        "on_success",
        "task_success",
        "after_return",
        "task_postrun",
    ]
    child = runs_of("add")[0]["pid"]
    assert child != worker.pid
    signalled = [e for e in entries if "signal" in e]
    assert {e["pid"] for e in signalled} == {child}
    assert [e["sender"] for e in signalled] == [worker.name] + [ADD] * 3  # type: ignore[attr-defined]
    assert {e["current"] for e in signalled[1:]} == {added.id}  # self.request is the run's
    postrun = signalled[-1]
    assert (postrun["signal"], postrun["state"]) == ("task_postrun", "SUCCESS")
    assert postrun["retval"] == "8"
    assert [e["result"] for e in signalled if e["signal"] == "task_success"] == ["8"]

    # a task no worker knows, a message that is not one, a task expired before it ran
    unknown = client.send_task(f"{PROJ}.tasks.missing")
    client.broker.send([Outgoing("celery", "junk-1", b"not a beatq message", None)])
    expired = client.send_task(ADD, (1, 1), expires=datetime(2000, 1, 1, tzinfo=timezone.utc))
    assert expired.get(timeout=scaled(20), propagate=False) is not None
    assert expired.state == "REVOKED"

    def seen(name: str) -> list[dict]:
        return [e for e in trace() if e.get("signal") == name]

    wait_for(lambda: seen("task_unknown") and seen("task_rejected") and seen("task_revoked"))
    assert [(e["name"], e["id"]) for e in seen("task_unknown")] == [
        (f"{PROJ}.tasks.missing", unknown.id)
    ]
    assert [e["exc"] for e in seen("task_rejected")] == ["MessageError"]
    revoked = seen("task_revoked")
    assert [(e["request"], e["expired"], e["terminated"]) for e in revoked] == [
        (expired.id, True, False)
    ]
    assert revoked[0]["sender"] == ADD


def test_a_task_whose_process_died_sends_task_failure_from_the_worker(
    client: Beatq, start: Callable[..., WorkerProcess]
) -> None:
    worker = start("-P", "prefork", "-c", "1")
    died = client.send_task(f"{PROJ}.tasks.die")
    with pytest.raises(Exception) as raised:
        died.get(timeout=scaled(30))
    assert type(raised.value).__name__ == "WorkerLostError"
    entries = wait_for(lambda: [e for e in trace(died.id) if e.get("signal") == "task_failure"])
    assert [(e["pid"], e["exception"][:16]) for e in entries] == [(worker.pid, "WorkerLostError(")]
    # its hooks ran up to the start only: the process that would run on_failure is gone
    assert [e["hook"] for e in trace(died.id) if "hook" in e] == ["before_start"]


def test_worker_signals_from_start_to_a_warm_stop(
    client: Beatq, start: Callable[..., WorkerProcess]
) -> None:
    worker = start("-P", "prefork", "-c", "2")

    def seen(name: str) -> list[dict]:
        return [e for e in trace() if e.get("signal") == name]

    wait_for(lambda: seen("worker_ready") and len(seen("worker_process_init")) == 2)
    # the project set up logging itself (setup_logging), and beatq did not
    assert [e["pid"] for e in seen("setup_logging")] == [worker.pid]
    assert [e["logger"] for e in seen("after_setup_logger")] == ["root"]
    wait_for(lambda: "PROJ-LOG" in worker.log(), 10, "the project's log format")
    assert "PROJ-LOG INFO beatq.worker: worker" in worker.log()

    init = seen("celeryd_init")
    assert [(e["sender"], e["instance"], e["pid"]) for e in init] == [
        (worker.name, worker.name, worker.pid)  # type: ignore[attr-defined]
    ]
    assert init[0]["options"] == ["concurrency", "pool", "queues"]
    starting = [e["signal"] for e in trace() if e.get("pid") == worker.pid and "signal" in e]
    assert starting[:4] == ["setup_logging", "after_setup_logger", "celeryd_init", "worker_init"]
    assert starting[-1] == "worker_ready"
    children = {e["pid"] for e in seen("worker_process_init")}
    assert len(children) == 2 and worker.pid not in children

    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    down = seen("worker_shutting_down")
    assert [(e["sender"], e["sig"], e["how"]) for e in down] == [
        (worker.name, "SIGTERM", "Warm")  # type: ignore[attr-defined]
    ]
    assert [e["pid"] for e in seen("worker_shutdown")] == [worker.pid]
    wait_for(lambda: len(seen("worker_process_shutdown")) == 2)
    assert {e["pid"] for e in seen("worker_process_shutdown")} == children


def test_periodic_tasks_run_and_beats_signal_their_start(
    client: Beatq, start: Callable[..., WorkerProcess]
) -> None:
    worker = start("-P", "prefork", "-c", "1", "-B")
    wait_for(lambda: len(journal("ticks")) >= 2, 20, "two periodic runs")
    assert worker.pid not in {t["pid"] for t in journal("ticks")}  # run by the child
    # the entry celery.py adds with add_periodic_task, in its on_after_configure receiver
    wait_for(lambda: len(journal("settled")) >= 2, 20, "two runs of the code's entry")
    assert {s["period"] for s in journal("settled")} == {"half-second"}
    assert sorted(client.broker.beat_entries()) == [
        "settle every half second",
        "tick-every-half-second",
    ]
    embedded = [e for e in trace() if e.get("signal") == "beat_embedded_init"]
    assert [(e["sender"], e["pid"]) for e in embedded] == [("Beat", worker.pid)]
    worker.stop()

    beat = start(command="beat")
    wait_for(lambda: [e for e in trace() if e.get("signal") == "beat_init"], 20, "beat_init")
    assert [e["pid"] for e in trace() if e.get("signal") == "beat_init"] == [beat.pid]
    embedded = [e for e in trace() if e.get("signal") == "beat_embedded_init"]
    assert beat.pid not in {e["pid"] for e in embedded}


def test_update_state_shows_a_custom_state_and_its_meta_in_another_process(
    client: Beatq, start: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    start("-P", "threads", "-c", "2")
    gate = tmp_path / "gate"
    result = client.send_task(f"{PROJ}.tasks.progress", (str(gate),))
    wait_for(lambda: result.state == "PROGRESS", 20, "the PROGRESS state")
    assert result.info == {"done": 1, "total": 2}
    assert result.result == {"done": 1, "total": 2}
    assert not result.ready()
    other = AsyncResult(result.id, app=client)
    assert (other.state, other.info) == ("PROGRESS", {"done": 1, "total": 2})
    gate.touch()
    assert result.get(timeout=scaled(20)) == "finished"
    assert (result.state, result.info) == ("SUCCESS", "finished")
    assert os.path.exists(gate)
