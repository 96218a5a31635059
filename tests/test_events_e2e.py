"""Events and revoke end to end: real `beatq worker -E` and `beatq beat -E` processes.

Every event kind appears in the stream, in order, with the right task ids; a revoked
task is skipped, and with --terminate a running one is stopped in every pool.
"""

from __future__ import annotations

import re
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest

from beatq.events import Event
from beatq.exceptions import TaskRevokedError
from tests.conftest import scaled, wait_for
from tests.proj import journal
from tests.test_beat_e2e import start_beat, tick, write_schedule  # noqa: F401


def all_events(app) -> list[Event]:
    return app.events.read(count=100_000)


def types_by_task(events: list[Event]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for event in events:
        if "task_id" in event.fields and event.type.startswith("task-"):
            found[event.fields["task_id"]].append(event.type)
    return found


@pytest.mark.backends("redis", "sqlite")
def test_event_stream_of_a_real_run(app, start_worker, monkeypatch) -> None:
    from tests.proj.tasks import add, fail, flaky

    monkeypatch.setitem(app.conf, "task_send_sent_event", True)
    worker = start_worker("-E", "-P", "threads", "-c", "2")
    ok = add.delay(2, 2)
    bad = fail.delay("boom")
    retried = flaky.delay(1)
    expired = add.apply_async((1, 1), countdown=1.0, expires=0.3)
    dead = app.send_task("tests.proj.tasks.missing", (1,))
    revoked = add.apply_async((3, 3), countdown=3.0)
    app.control.revoke(revoked.id)

    assert ok.get(timeout=scaled(10)) == 4
    assert retried.get(timeout=scaled(10)) == 1
    bad.get(timeout=scaled(10), propagate=False)
    for result in (expired, revoked):
        wait_for(lambda r=result: r.state == "REVOKED", 10, f"{result.id} to be REVOKED")
    wait_for(lambda: "task-dead-lettered" in types_by_task(all_events(app))[dead.id], 10)
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    events = all_events(app)
    by_task = types_by_task(events)
    run = ["task-sent", "task-received", "task-started"]
    assert by_task[ok.id] == [*run, "task-succeeded"]
    assert by_task[bad.id] == [*run, "task-failed"]
    assert by_task[retried.id] == [*run, "task-retried", *run[1:], "task-succeeded"]
    assert by_task[expired.id] == ["task-sent", "task-expired"]
    assert by_task[dead.id] == ["task-sent", "task-dead-lettered"]
    assert by_task[revoked.id] == ["task-sent", "task-revoked"]

    def one(task_id: str, type_: str) -> Event:
        (found,) = [e for e in events if e.type == type_ and e.fields["task_id"] == task_id]
        return found

    assert one(ok.id, "task-succeeded").fields["result"] == "4"
    assert one(ok.id, "task-succeeded").fields["runtime"] >= 0
    assert one(ok.id, "task-received").fields["args"] == "[2, 2]"
    failed = one(bad.id, "task-failed").fields
    assert failed["exception"] == "CustomError('boom')"
    assert "raise CustomError(message)" in failed["traceback"]
    assert failed["hostname"] == worker.name
    assert "missing" in one(dead.id, "task-dead-lettered").fields["reason"]

    mine = [e.type for e in events if e.fields.get("hostname") == worker.name]
    worker_kinds = [t for t in mine if t.startswith("worker-")]
    assert worker_kinds[0] == "worker-online" and worker_kinds[-1] == "worker-offline"
    assert "worker-heartbeat" in worker_kinds
    ids = [e.id for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
    times = [e.time for e in events if e.fields.get("task_id") == ok.id]
    assert times == sorted(times)


@pytest.mark.backends("redis", "sqlite")
def test_beat_events_elected_dispatched_lost_missed(app, start_beat, tmp_path: Path) -> None:  # noqa: F811
    schedule = write_schedule(tmp_path / "s.yaml", {"tick": tick()})
    first = start_beat(schedule, "-E")

    def kinds() -> list[str]:
        return [e.type for e in all_events(app)]

    wait_for(lambda: "beat-dispatched" in kinds(), 15, "a dispatch")
    first.signal(signal.SIGTERM)
    assert first.wait(10) == 0
    time.sleep(2.5)  # the downtime under test: runs come due while no beat runs
    second = start_beat(schedule, "-E")
    wait_for(lambda: "beat-missed" in kinds(), 15, "the missed runs")
    wait_for(lambda: kinds().count("beat-elected") == 2 and kinds()[-1] == "beat-dispatched", 15)
    second.stop()
    events = all_events(app)
    compact = [e.type for i, e in enumerate(events) if i == 0 or e.type != events[i - 1].type]
    assert compact[:3] == ["beat-elected", "beat-dispatched", "beat-lost"]
    assert compact[3:6] == ["beat-elected", "beat-missed", "beat-dispatched"]
    lost = next(e for e in events if e.type == "beat-lost")
    assert lost.fields["reason"] == "released"
    missed = next(e for e in events if e.type == "beat-missed")
    assert missed.fields["entry"] == "tick" and missed.fields["missed"] >= 1
    dispatched = [e for e in events if e.type == "beat-dispatched"]
    assert all(e.fields["entry"] == "tick" and e.fields["task_id"] for e in dispatched)
    assert all(0 <= e.fields["lateness"] < scaled(1.0) for e in dispatched)
    holders = [e.fields["holder"] for e in events if e.type == "beat-elected"]
    assert len(set(holders)) == 2


@pytest.mark.backends("redis", "sqlite")
def test_a_task_revoked_before_a_worker_starts_never_runs(app, start_worker) -> None:
    from tests.proj.tasks import add, sleep

    skipped = sleep.delay(0.1, "skipped")
    app.control.revoke(skipped.id)
    assert skipped.id in app.control.revoked()
    start_worker("-E", "-P", "prefork", "-c", "1")
    with pytest.raises(TaskRevokedError):
        skipped.get(timeout=scaled(10))
    assert skipped.state == "REVOKED"
    assert add.delay(1, 2).get(timeout=scaled(10)) == 3
    assert journal("runs") == []
    assert types_by_task(all_events(app))[skipped.id] == ["task-revoked"]


@pytest.mark.backends("redis", "sqlite")
@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_revoke_terminate_stops_a_running_task(app, start_worker, pool: str) -> None:
    from tests.proj.tasks import add, sleep

    worker = start_worker("-E", "-P", pool, "-c", "1")
    running = sleep.delay(30, "long")
    wait_for(lambda: any(r.startswith("long:start") for r in journal("runs")), 10, "the start")
    began = time.monotonic()
    app.control.revoke(running.id, terminate=True)
    with pytest.raises(TaskRevokedError) as caught:
        running.get(timeout=scaled(10))
    assert time.monotonic() - began < scaled(5)
    assert running.state == "REVOKED"
    # it ran: said so, with how long, in the result and the worker's log (not "not run")
    assert re.fullmatch(r"terminated after \d+\.\ds", str(caught.value)), str(caught.value)
    logged = wait_for(
        lambda: re.search(rf"{running.id}\] terminated after \d+\.\ds \(REVOKED\)", worker.log()),
        5,
        "the termination in the worker's log",
    )
    assert logged and f"{running.id}] revoked; not run" not in worker.log()
    assert not any(r.startswith("long:end") for r in journal("runs"))
    assert add.delay(2, 3).get(timeout=scaled(10)) == 5, "the worker keeps serving"
    kinds = types_by_task(all_events(app))[running.id]
    assert kinds == ["task-received", "task-started", "task-revoked"]
    assert worker.process.poll() is None


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_events_of_tasks_without_results_are_sent_when_the_worker_idles(
    app, start_worker, pool: str
) -> None:
    from tests.proj.tasks import quiet

    start_worker("-E", "-P", pool, "-c", "2")
    sent = [quiet.delay(i).id for i in range(20)]
    wait_for(lambda: len(journal("quiet")) == 20, 10, "the 20 runs")

    def succeeded() -> set[str]:
        return {e.fields["task_id"] for e in all_events(app) if e.type == "task-succeeded"}

    wait_for(lambda: succeeded() >= set(sent), 5, "every task-succeeded event")
    by_task = types_by_task(all_events(app))
    assert all(by_task[i] == ["task-received", "task-started", "task-succeeded"] for i in sent)


@pytest.mark.backends("redis", "sqlite")
def test_result_and_group_revoke_as_in_celery(app, start_worker) -> None:
    from beatq import group
    from tests.proj.tasks import add, sleep

    single = sleep.apply_async((0.1, "one"), countdown=2)
    single.revoke()
    many = group(sleep.s(0.1, f"g{i}").set(countdown=2) for i in range(3))()
    many.revoke(terminate=True, signal="SIGKILL")
    assert set(app.control.revoked()) == {single.id, *(r.id for r in many.results)}
    assert app.control.revoked()[many.results[0].id] is True
    start_worker("-P", "threads")
    for result in (single, *many.results):
        with pytest.raises(TaskRevokedError):
            result.get(timeout=scaled(10))
    assert add.delay(1, 1).get(timeout=scaled(10)) == 2
    assert journal("runs") == []
