"""The worker's promises that a speed-up must keep (SPEC §6), pinned where a worker holds
claims ahead of what it runs: in its buffer and, in prefork, behind a child's task.

- A cold stop (second SIGTERM) puts back in its queue what did not finish, and nothing
  that did: no task finishes twice, acks_late or not.
- A revoked task the worker holds and has not started never runs, wherever it waits.
- kill -9 of the whole worker loses no task that had not started, also when the tasks
  ahead of them run longer than those before them.
- A busy worker holds no more than its prefetch beyond what it runs, so another worker
  takes its share.

Each test sends a chunk of ETA tasks sharing one eta (bench/eta.py's shape), the load a
worker claims furthest ahead. Real workers through the CLI, on Redis and SQLite.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import uuid
from collections import Counter

import pytest

from beatq import AsyncResult
from beatq.worker import Worker
from tests.conftest import scaled, stored_messages, wait_for
from tests.proj import record
from tests.test_delivery import claimed, runs, started
from tests.test_pools import children_of

BOTH = pytest.mark.backends("redis", "sqlite")
VISIBILITY = {"BEATQ_TEST_VISIBILITY": "1.5"}


def info(app, worker) -> dict:
    """What `worker` published with its last heartbeat (its `inspect` fields)."""
    raw = app.broker.workers().get(worker.name)
    return json.loads(raw) if raw else {}


def in_order(count: int) -> list[str]:
    """`count` task ids in sorting order: messages sharing one eta are claimed in the order
    of their ids on Redis (the sorted set's ties), in send order on SQLite; sent in this
    order, both claim them in the order sent."""
    return sorted(str(uuid.uuid4()) for _ in range(count))


def settle(results: list[AsyncResult], timeout: float) -> list[AsyncResult]:
    """Wait up to `timeout` seconds (scaled) for `results` to be ready: those still not."""
    deadline = time.monotonic() + scaled(timeout)
    while (waiting := [r for r in results if not r.ready()]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return waiting


def kill_tree(worker) -> None:
    """kill -9 of the worker and its children at once, as on a power loss: the parent is
    stopped first, so it replaces no child it sees die."""
    os.kill(worker.pid, signal.SIGSTOP)
    for child in children_of(worker.pid):
        os.kill(child, signal.SIGKILL)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(5)


# -- a cold stop -------------------------------------------------------------------------------
@BOTH
@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "prefork", "-c", "2"]], ids=lambda p: p[1])
def test_a_cold_stop_puts_back_what_did_not_finish_and_nothing_that_did(
    app, start_worker, pool, request
):
    """A chunk of ETA tasks sharing one eta: twelve early-acknowledged, two acks_late among
    them, two that run until released, two more. A second SIGTERM once the quick ones have ended and
    the long ones run: the quick ones stay done (the acks_late ones were acknowledged by
    their finish), the long ones and those not started are back in their queue at once,
    none left claimed; a second worker runs those, and nothing done runs again."""
    from tests.proj.tasks import held, sleep, sleep_late

    request.addfinalizer(lambda: [record("release", f"long{i}") for i in range(2)])
    worker = start_worker(*pool)
    eta = time.time() + scaled(0.5)
    calls = [(sleep, (0.05, f"t{i}"), f"t{i}") for i in range(12)]
    calls[4:4] = [(sleep_late, (0.05, f"late{i}"), f"late{i}") for i in range(2)]
    calls += [(held, (f"long{i}", scaled(30)), f"long{i}") for i in range(2)]
    calls += [(sleep, (0.05, f"w{i}"), f"w{i}") for i in range(2)]
    tags = {
        task.apply_async(args, eta=eta, task_id=id_).id: tag
        for (task, args, tag), id_ in zip(calls, in_order(len(calls)))
    }
    quick = {id_ for id_, tag in tags.items() if tag.startswith(("late", "t"))}
    running = 1 if pool[1] == "solo" else 2
    wait_for(lambda: all(runs(tags[i], "end") for i in quick), 10, "the quick ones to end")
    wait_for(lambda: sum(bool(runs(f"long{i}")) for i in range(2)) == running, 5, "the long")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM received" in worker.log(), 5, "the first signal")
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    assert "stopping now" in worker.log(), "a cold stop"

    done = {id_ for id_ in tags if AsyncResult(id_, app=app).state == "SUCCESS"}
    back = {m.id for m in stored_messages(app) if m.state == "ready"}
    assert sorted(tags[i] for i in done & back) == [], "finished, and put back"
    left = sorted(tags[i] for i in claimed(app))
    assert left == [], f"left claimed, to expire: {worker.log()}"
    assert done >= quick
    assert back == set(tags) - done, "what did not finish is back in its queue at once"
    assert {"long0", "long1"} <= {tags[i] for i in back}

    for i in range(2):
        record("release", f"long{i}")
    start_worker("-P", "solo")
    for id_, tag in tags.items():
        assert AsyncResult(id_, app=app).get(timeout=scaled(10)) == tag
    again = sorted(tag for tag in map(tags.get, quick) if len(runs(tag)) > 1)
    assert again == [], "done, and run again"


@pytest.mark.backends("sqlite")
def test_a_second_signal_while_the_warm_stop_hands_back_still_puts_it_all_back(
    app, start_worker, broker_url, request
):
    """The first SIGTERM takes back the two tasks waiting behind a prefork child's task,
    to return them to their queue, and the store is slow to take them (another process
    holds its write lock); the second comes meanwhile. As the worker exits, all three are
    back in their queue: none is left claimed until the visibility timeout."""
    from tests.proj.tasks import held, sleep

    held.delay("long", scaled(30))
    request.addfinalizer(lambda: record("release", "long"))
    waiting = {sleep.delay(0, f"w{i}").id for i in range(2)}
    worker = start_worker("-P", "prefork", "-c", "1")  # its first claim takes all three
    started("long")
    wait_for(lambda: claimed(app) == waiting, 5, "the two waiting in its child")
    other = sqlite3.connect(broker_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock, as a busy writer holds it
    try:
        worker.signal(signal.SIGTERM)
        wait_for(lambda: "SIGTERM received" in worker.log(), 5, "the first signal")
        worker.signal(signal.SIGTERM)
        wait_for(lambda: "stopping now" in worker.log(), 5, "the second signal")
    finally:
        other.rollback()
        other.close()
    assert worker.wait(10) == 0
    assert claimed(app) == set(), "left claimed, until the visibility timeout"
    assert app.broker.queue_length("celery") == 3


# -- revocation --------------------------------------------------------------------------------
@BOTH
@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "prefork", "-c", "1"]], ids=lambda p: p[1])
def test_a_revoked_task_the_worker_holds_never_runs_wherever_it_waits(
    app, start_worker, pool, request
):
    """A long task, then a chunk of 8 ETA tasks sharing an eta 5 ms after it: the worker
    holds some of the chunk behind the long task (solo: the first claim's, in the buffer;
    prefork: claimed ahead of the eta, two behind the child's task, then the buffer).
    Every one it holds but the first to start is revoked, and one it does not hold: each
    ends REVOKED without running, wherever it waited (the second waiting in a child too,
    not only the first); the others run."""
    from tests.proj.tasks import held, sleep

    solo = pool[1] == "solo"
    request.addfinalizer(lambda: record("release", "long"))
    if not solo:  # up, so that it claims the chunk ahead of its eta
        worker = start_worker(*pool)
    eta = time.time() + scaled(0.5)
    long = held.apply_async(("long", scaled(30)), eta=eta - 0.005)
    chunk = {sleep.apply_async((0, f"t{i}"), eta=eta).id: f"t{i}" for i in range(8)}
    if solo:  # it runs its task inline: it holds what its first claim takes, all due
        time.sleep(max(0.0, eta - time.time()))
        worker = start_worker(*pool)
    started("long")

    def holding() -> list[str]:  # what the worker says it holds, once it holds it still
        reserved = [t["id"] for t in info(app, worker).get("reserved_tasks", [])]
        return time.time() > eta + 0.2 and set(reserved) == claimed(app) and reserved

    first, *behind = wait_for(holding, 5, "the worker to say what it holds")
    assert len(behind) >= 2, f"held behind the first: {behind} (else: no test)"
    elsewhere = [i for i in chunk if i not in claimed(app)][:1]
    revoked = behind + elsewhere
    app.control.revoke(revoked)
    wait_for(lambda: info(app, worker).get("revoked", 0) >= len(revoked), 5, "them seen")
    record("release", "long")

    assert long.get(timeout=scaled(10)) == "long"
    rest = [i for i in chunk if i not in revoked]
    assert [AsyncResult(i, app=app).get(timeout=scaled(10)) for i in rest] == [
        chunk[i] for i in rest
    ]
    states = lambda: [AsyncResult(i, app=app).state for i in revoked]  # noqa: E731
    wait_for(lambda: "PENDING" not in states(), 5, "the revoked ones' outcomes")
    ran = sorted(chunk[i] for i in revoked if runs(chunk[i]))
    assert ran == [], f"revoked, and run (held: {[chunk[i] for i in [first, *behind]]})"
    assert set(states()) == {"REVOKED"}
    assert claimed(app) == set()


# -- kill -9 -----------------------------------------------------------------------------------
@BOTH
def test_kill9_loses_no_task_waiting_behind_tasks_that_ran_longer_than_before(app, start_worker):
    """A prefork worker has run a chunk of quick ETA tasks; the next chunk's first two
    take seconds. kill -9 of the worker (parent and children) while they run: every task
    behind them comes back and runs once on another worker; the two (acknowledged as they
    started) do not run again."""
    from tests.proj.tasks import sleep

    first = start_worker("-P", "prefork", "-c", "2", extra_env=VISIBILITY)
    eta = time.time() + scaled(0.5)
    warm = sleep.apply_many([(0, f"w{i}") for i in range(20)], eta=eta)
    assert sorted(r.get(timeout=scaled(10)) for r in warm) == sorted(f"w{i}" for i in range(20))
    eta = time.time() + scaled(0.5)
    calls = [(scaled(30), f"long{i}") for i in range(2)] + [(0, f"q{i}") for i in range(30)]
    # claimed in this order: the long ones first, one in each child
    sent = [sleep.apply_async(a, eta=eta, task_id=i) for a, i in zip(calls, in_order(32))]
    longs, quick = sent[:2], sent[2:]
    started("long0")
    started("long1")
    kill_tree(first)
    killed_at = time.time()

    start_worker("-P", "prefork", "-c", "2", extra_env=VISIBILITY)
    tags = [f"q{i}" for i in range(30)]
    lost = settle(quick, 10)
    assert [tag for r, tag in zip(quick, tags) if r in lost] == [], "lost"
    assert [r.get(timeout=1) for r in quick] == tags
    assert [len(runs(tag)) for tag in tags] == [1] * 30, "each once"
    # every claim of the dead worker has expired and been looked at by a claim since
    time.sleep(max(0.0, killed_at + 1.7 - time.time()))
    assert sleep.delay(0, "probe").get(timeout=scaled(10)) == "probe"
    assert [len(runs(f"long{i}")) for i in range(2)] == [1, 1], "not run again"
    assert [r.state for r in longs] == ["PENDING", "PENDING"]


# -- prefetch fairness -------------------------------------------------------------------------
@BOTH
def test_two_busy_workers_share_a_chunk_none_holding_past_its_prefetch(app, start_worker):
    """12 one-second ETA tasks sharing one eta, two prefork -c 1 workers (prefetch 4): each
    holds at most its prefetch beyond the task it runs, so each runs half of them and the
    last ends about 6 s after the eta (one worker holding 8 ends 8 s after it)."""
    from tests.proj.tasks import sq_host

    workers = [start_worker("-P", "prefork", "-c", "1") for _ in range(2)]
    eta = time.time() + scaled(1.0)
    results = sq_host.apply_many([(1.0,)] * 12, eta=eta)
    most = {w.name: 0 for w in workers}
    while not all(r.ready() for r in results):
        assert time.time() < eta + scaled(20), "the chunk did not end"
        for w in workers:
            most[w.name] = max(most[w.name], info(app, w).get("reserved", 0))
        time.sleep(0.05)
    assert max(most.values()) <= 4, f"held beyond the prefetch: {most}"
    ran = Counter(r.get(timeout=1) for r in results)
    assert sorted(ran.values()) == [6, 6], f"tasks each worker ran: {dict(ran)}"


@BOTH
def test_a_busy_worker_claims_work_sent_after_a_top_up_that_found_none(app, start_worker, request):
    """A threads -c 1 worker (prefetch 4, topped up at 1 left) runs a long task with one
    claim left in its buffer: its top-up finds the queue empty. Work sent after is claimed
    ahead all the same, up to the prefetch, while the long task still runs (not only once
    its buffer has run out)."""
    from tests.proj.tasks import held, sleep

    long = held.delay("long", scaled(30))
    request.addfinalizer(lambda: record("release", "long"))
    first = sleep.delay(0, "a")
    start_worker("-P", "threads", "-c", "1")  # its first claim takes both
    started("long")
    wait_for(lambda: claimed(app) == {first.id}, 5, "the one left in its buffer")
    time.sleep(5 * Worker.URGENT_EVERY)  # its top-up, every look while busy: found none
    later = [sleep.delay(0, f"b{i}") for i in range(6)]
    wait_for(lambda: app.broker.queue_length("celery") == 3, 10, "claims ahead, to 4")
    assert runs("long", "end") == [], "claimed while the long task ran"
    assert claimed(app) == {first.id} | {r.id for r in later[:3]}
    record("release", "long")
    assert long.get(timeout=scaled(10)) == "long"
    assert [r.get(timeout=scaled(10)) for r in later] == [f"b{i}" for i in range(6)]
