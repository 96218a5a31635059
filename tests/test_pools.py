"""Pools (solo, threads, prefork) in real worker processes: concurrency, time limits, lost children.

SPEC §6: `-P prefork|threads|solo -c N`; `time_limit`/`soft_time_limit` stop a stuck task.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from pathlib import Path

import pytest

from beatq.exceptions import TimeLimitExceeded, WorkerLostError
from tests.conftest import scaled, wait_for
from tests.proj import journal

POOLS = {
    "solo": ["-P", "solo"],
    "threads": ["-P", "threads", "-c", "4"],
    "prefork": ["-P", "prefork", "-c", "2"],
}


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The largest number of spans running at the same instant."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize(
    "pool, width", [("solo", 1), ("threads", 4), ("prefork", 2)], ids=["solo", "threads", "prefork"]
)
def test_pool_runs_as_many_tasks_at_once_as_its_concurrency(app, start_worker, pool, width):
    from tests.proj.tasks import dl_span

    worker = start_worker(*POOLS[pool])
    batch = [dl_span.delay(0.4, f"t{i}") for i in range(4)]
    assert [r.get(timeout=scaled(10)) for r in batch] == ["t0", "t1", "t2", "t3"]

    rows = [line.split() for line in journal("spans")]
    assert sorted(tag for tag, *_ in rows) == ["t0", "t1", "t2", "t3"]
    spans = [(float(start), float(end)) for _, _, start, end in rows]
    assert max_overlap(spans) == width
    elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
    assert 0.4 * 4 / width <= elapsed < 0.4 * 4 / width + 1.0
    pids = {int(pid) for _, pid, *_ in rows}
    if pool == "prefork":
        assert len(pids) == 2 and worker.pid not in pids
    else:
        assert pids == {worker.pid}


BLOCKING = "the tasks block in time.sleep"
STEPPING = "the tasks sleep in short steps"
BLOCKED_THREAD = (
    "a pool thread's limit is an asynchronous exception, raised only when the C call "
    "(time.sleep) returns: the threads pool cannot stop a task blocked in C"
)


@pytest.mark.parametrize(
    "pool, tasks",
    [
        ("solo", BLOCKING),
        ("prefork", BLOCKING),
        ("threads", STEPPING),
        pytest.param(
            "threads", BLOCKING, marks=pytest.mark.xfail(strict=True, reason=BLOCKED_THREAD)
        ),
    ],
    ids=["solo", "prefork", "threads", "threads-blocked-in-C"],
)
def test_soft_and_hard_time_limits_stop_the_task(app, start_worker, pool, tasks):
    from tests.proj import tasks as t

    soft_task, hard_task = (
        (t.soft_limited, t.hard_limited)
        if tasks == BLOCKING
        else (t.dl_soft_steps, t.dl_hard_steps)
    )
    start_worker(*POOLS[pool])
    began = time.monotonic()
    soft = soft_task.delay(2.5)
    hard = hard_task.delay(2.5)
    assert soft.get(timeout=scaled(2)) == "soft limit caught"
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=scaled(2))
    # soft 0.3 s and hard 0.5 s, one after the other in the solo pool
    assert time.monotonic() - began < scaled(2.2), "the limits stopped both tasks early"
    assert hard.state == "FAILURE"
    assert t.add.delay(2, 2).get(timeout=scaled(5)) == 4, "the worker keeps serving"


def test_prefork_kills_a_child_stuck_past_its_hard_limit(app, start_worker):
    from tests.proj.tasks import add, dl_blocked_sleep

    worker = start_worker("-P", "prefork", "-c", "1")
    began = time.monotonic()
    stuck = dl_blocked_sleep.delay(30)
    with pytest.raises(TimeLimitExceeded):
        stuck.get(timeout=scaled(10))
    # time_limit 0.5 s, then the parent's grace period (1 s) before it kills the child
    assert 1.4 < time.monotonic() - began < scaled(5)
    assert stuck.state == "FAILURE"
    assert add.delay(20, 1).get(timeout=scaled(5)) == 21, "a new child serves the next task"
    assert "exited" in worker.log()


def test_prefork_child_that_dies_fails_its_task_with_worker_lost(app, start_worker):
    from tests.proj.tasks import add, dl_exit

    start_worker("-P", "prefork", "-c", "2")
    lost = dl_exit.delay(1)
    with pytest.raises(WorkerLostError):
        lost.get(timeout=scaled(10))
    assert lost.state == "FAILURE"
    assert [add.delay(i, i).get(timeout=scaled(5)) for i in range(3)] == [0, 2, 4]
    assert app.broker.queue_length("celery") == 0


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        found |= {int(c) for c in path.read_text().split()}
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_prefork_children_do_not_outlive_a_parent_killed_with_sigkill(app, start_worker):
    worker = start_worker("-P", "prefork", "-c", "2")
    children = children_of(worker.pid)
    assert len(children) == 2
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(5)
    try:
        wait_for(lambda: not any(running(c) for c in children), 5, "the orphans to exit")
    finally:
        for child in children:
            if running(child):
                os.kill(child, signal.SIGKILL)


def test_prefork_parent_applies_the_per_call_time_limit(app, start_worker):
    from tests.proj.tasks import dl_stuck, hard_limited

    start_worker("-P", "prefork", "-c", "2")
    began = time.monotonic()
    # The task's own limit is 0.5 s: the caller allows more.
    longer = hard_limited.apply_async((1.8,), time_limit=10)
    # No limit of its own, stuck where only the parent can stop it: the caller sets one.
    stuck = dl_stuck.apply_async((30,), time_limit=0.3)
    with pytest.raises(TimeLimitExceeded):
        stuck.get(timeout=scaled(5))
    assert longer.get(timeout=scaled(5)) == "finished"
    assert time.monotonic() - began < scaled(4)


# -- what waits in a prefork child behind its running task (PreforkPool.QUEUED) ----------------
def run_log(prefix: str) -> list[str]:
    """The "runs" journal entries of the `sleep` task whose tag starts with `prefix`."""
    return [r for r in journal("runs") if r.startswith(prefix)]


def test_prefork_a_task_does_not_wait_behind_a_long_one_while_a_child_is_free(app, start_worker):
    from tests.proj.tasks import sleep

    start_worker("-P", "prefork", "-c", "2")
    long = sleep.delay(4.0, "long")
    wait_for(lambda: run_log("long:start"), scaled(10), "the long task to start")
    short = [sleep.delay(0.2, f"short{i}") for i in range(4)]
    # Some of them are handed to the child that runs the long task, to wait there: the
    # other child takes them over as it frees up, so all four end long before it does.
    assert [r.get(timeout=scaled(3.5)) for r in short] == [f"short{i}" for i in range(4)]
    assert run_log("long:end") == [], "the short ones did not wait for the long one"
    assert long.get(timeout=scaled(10)) == "long"
    pids = {r.rsplit(":", 1)[1] for r in run_log("short") + run_log("long")}
    assert len(pids) == 2


def test_prefork_a_task_revoked_while_it_waits_in_a_child_never_runs(app, start_worker):
    from tests.proj.tasks import sleep

    start_worker("-P", "prefork", "-c", "1")
    first = sleep.delay(3.0, "first")
    wait_for(lambda: run_log("first:start"), scaled(10), "the first task to start")
    second = sleep.delay(0.05, "second")
    wait_for(lambda: app.broker.queue_length("celery") == 0, scaled(5), "the worker to claim it")
    second.revoke()
    assert first.get(timeout=scaled(10)) == "first"
    wait_for(lambda: second.state == "REVOKED", scaled(5), "the revoked task's state")
    assert run_log("second") == [], "a revoked task waiting in the child was not run"


def test_prefork_what_waits_in_a_child_that_dies_runs_in_its_replacement(app, start_worker):
    from tests.proj.tasks import add, dl_exit_after

    start_worker("-P", "prefork", "-c", "1")
    lost = dl_exit_after.delay(0.5)
    after = add.delay(2, 3)
    wait_for(lambda: app.broker.queue_length("celery") == 0, scaled(5), "the worker to claim both")
    with pytest.raises(WorkerLostError):
        lost.get(timeout=scaled(10))
    # Not after the visibility timeout (60 s): handed to the new child at once.
    assert after.get(timeout=scaled(5)) == 5


def test_prefork_a_warm_stop_returns_what_waits_in_a_child(app, start_worker):
    from tests.proj.tasks import sleep

    worker = start_worker("-P", "prefork", "-c", "1")
    first = sleep.delay(1.0, "first")
    wait_for(lambda: run_log("first:start"), scaled(10), "the first task to start")
    later = [sleep.delay(0.05, f"later{i}") for i in range(2)]
    wait_for(lambda: app.broker.queue_length("celery") == 0, scaled(5), "the worker to claim them")
    worker.signal(signal.SIGTERM)
    assert worker.wait(scaled(10)) == 0
    assert first.get(timeout=scaled(2)) == "first", "what ran, finished"
    assert run_log("later") == [], "what waited did not run during the stop"
    assert app.broker.queue_length("celery") == 2, "it went back to its queue"
    start_worker("-P", "solo")
    assert [r.get(timeout=scaled(10)) for r in later] == ["later0", "later1"]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_prefork_children_killed_mid_drain_lose_and_double_nothing(app, start_worker):
    """kill -9 of a child, again and again, while its siblings drain: the task it ran fails
    with WorkerLostError, what waited in it runs once elsewhere, nothing runs twice."""
    from tests.proj.tasks import sleep

    results = [sleep.delay(0.01, f"k{i}") for i in range(300)]
    worker = start_worker("-P", "prefork", "-c", "2")
    kills = 0
    deadline = time.monotonic() + scaled(30)
    while not all(r.ready() for r in results):
        assert time.monotonic() < deadline, "the drain did not end"
        children = children_of(worker.pid)
        if kills < 6 and len(children) == 2 and len(journal("runs")) > 40 * (kills + 1):
            os.kill(sorted(children)[kills % 2], signal.SIGKILL)
            kills += 1
        time.sleep(0.02)
    assert kills == 6
    failed = [r for r in results if r.state == "FAILURE"]
    assert 1 <= len(failed) <= kills, "a kill fails the task it cut short, and only that one"
    assert all(isinstance(r.result, WorkerLostError) for r in failed)
    starts = collections.Counter(e.split(":")[0] for e in journal("runs") if ":start:" in e)
    assert max(starts.values()) == 1, "no task ran twice"
    ok = [r for r in results if r.state == "SUCCESS"]
    assert len(ok) + len(failed) == 300
    assert all(starts[r.result] == 1 for r in ok)
    assert app.broker.queue_length("celery") == 0
