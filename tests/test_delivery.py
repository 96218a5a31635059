"""Delivery guarantees with real worker processes: kill -9, redelivery, renewal, shutdown.

SPEC §6: a message a dead worker had taken but not started comes back after the
visibility timeout; a running task is run again only when it is acks_late; a live worker
renews its claims; SIGTERM finishes what runs, a second signal requeues it.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from beatq import AsyncResult
from tests.conftest import scaled, stored_messages, wait_for
from tests.proj import journal

VISIBILITY = {"BEATQ_TEST_VISIBILITY": "1.5"}
BOTH = pytest.mark.backends("redis", "sqlite")  # kill -9 needs worker processes


def runs(tag: str, what: str = "start") -> list[str]:
    """The journal entries of task runs tagged `tag` (`what`: start or end)."""
    return [r for r in journal("runs") if r.startswith(f"{tag}:{what}:")]


def started(tag: str, count: int = 1, timeout: float = 10.0) -> list[str]:
    return wait_for(lambda: len(runs(tag)) >= count and runs(tag), timeout, f"{tag} to start")


def kill9(worker) -> None:
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(5)


def claimed(app) -> set[str]:
    return {m.id for m in stored_messages(app) if m.state == "claimed"}


@BOTH
def test_kill9_loses_no_message_it_had_taken_but_not_started(app, start_worker):
    from tests.proj.tasks import add, sleep

    busy = sleep.delay(5, "busy")
    adds = [add.delay(i, 100) for i in range(7)]
    # Sent before the worker starts, so its first claim takes a full prefetch batch (4).
    first = start_worker("-P", "solo", extra_env=VISIBILITY)
    started("busy")
    assert claimed(app) == {r.id for r in adds[:3]}, "claimed and not started: the next three"
    assert app.broker.queue_length("celery") == 4
    kill9(first)

    start_worker("-P", "solo", extra_env=VISIBILITY)
    assert [r.get(timeout=scaled(10)) for r in adds] == [i + 100 for i in range(7)]
    assert all(r.state == "SUCCESS" for r in adds)
    assert claimed(app) == set()
    # The task that was running was acknowledged as it started: not run again.
    assert len(runs("busy")) == 1 and busy.state == "PENDING"


@BOTH
def test_kill9_loses_no_eta_task_it_had_claimed_ahead_and_held(app, start_worker):
    """A worker claims ETA messages due within AHEAD in one claim and holds them, not
    acknowledged, until each starts: killed while it runs the first of a chunk sharing one
    eta, the rest come back and each runs once, none before its eta; the started one (it
    was acknowledged as it started) does not run again."""
    from tests.proj.tasks import dl_span

    first = start_worker("-P", "solo", extra_env=VISIBILITY)
    eta = time.time() + scaled(0.5)
    # one claim takes all four (a solo worker's batch) 20 ms before their eta; the first
    # is acknowledged as it starts, the other three stay claimed while it runs
    chunk = {dl_span.apply_async((1.0, f"t{i}"), eta=eta).id: f"t{i}" for i in range(4)}
    held = wait_for(lambda: len(claimed(app)) == 3 and claimed(app), scaled(5), "one to start")
    assert held < set(chunk), "the other three held, claimed and not acknowledged"
    kill9(first)

    start_worker("-P", "solo", extra_env=VISIBILITY)
    results = [AsyncResult(id, app=app) for id in sorted(held)]
    assert [r.get(timeout=scaled(15)) for r in results] == [chunk[id] for id in sorted(held)]
    spans = [line.split() for line in journal("spans")]
    assert sorted(tag for tag, *_ in spans) == sorted(chunk[id] for id in held), "each once"
    assert all(float(start) >= eta for _, _, start, _ in spans), "none before its eta"
    assert claimed(app) == set()
    (running,) = set(chunk) - held
    assert AsyncResult(running, app=app).state == "PENDING", "the started one: not run again"


@BOTH
def test_kill9_of_a_prefork_worker_holding_a_chunk_of_eta_tasks_loses_none(app, start_worker):
    """The chunk of the test above on a prefork -c 2 worker: killed -9 while each child
    runs the first of the chunk it took and the rest wait claimed (in the children and the
    buffer), the rest come back after the visibility timeout and run once each, none before
    the eta; the two started (acknowledged as they started, their children gone with the
    parent) are not run again."""
    from tests.proj.tasks import dl_span

    first = start_worker("-P", "prefork", "-c", "2", extra_env=VISIBILITY)
    eta = time.time() + scaled(0.5)
    tags = [f"t{i}" for i in range(8)]
    results = dl_span.apply_many([(1.0, tag) for tag in tags], eta=eta)
    ids = {r.id: tag for r, tag in zip(results, tags)}
    held = wait_for(lambda: len(claimed(app)) == 6 and claimed(app), scaled(5), "two to start")
    assert held < set(ids), "six held, claimed and not acknowledged"
    children = _children(first.pid)
    kill9(first)

    start_worker("-P", "prefork", "-c", "2", extra_env=VISIBILITY)
    again = [AsyncResult(id_, app=app) for id_ in sorted(held)]
    assert [r.get(timeout=scaled(15)) for r in again] == [ids[id_] for id_ in sorted(held)]
    time.sleep(0.5)  # an orphan that outlived its parent would have ended its task by now
    spans = [line.split() for line in journal("spans")]
    ran = Counter(tag for tag, *_ in spans)
    assert [ran[ids[id_]] for id_ in sorted(held)] == [1] * 6, "each held one once"
    # the started two were acknowledged as they started: cut short with their children
    # (or ended there first), never run again
    started_two = {ids[id_] for id_ in set(ids) - held}
    assert {pid for tag, pid, *_ in spans if tag in started_two} <= children, "not again"
    assert all(float(start) >= eta for _, _, start, _ in spans), "none before its eta"
    assert claimed(app) == set()


def _children(pid: int) -> set[str]:
    """The pids (as the journal writes them) of the processes whose parent is `pid`."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(stat.parent.name)
    return found


@BOTH
def test_kill9_mid_task_acks_late_runs_it_again_elsewhere(app, start_worker):
    from tests.proj.tasks import sleep_late

    first = start_worker("-P", "solo", extra_env=VISIBILITY)
    result = sleep_late.delay(0.5, "late")
    (entry,) = started("late")
    assert entry == f"late:start:{first.pid}"
    kill9(first)
    second = start_worker("-P", "solo", extra_env=VISIBILITY)

    assert result.get(timeout=scaled(10)) == "late"
    assert result.state == "SUCCESS"
    assert runs("late") == [f"late:start:{first.pid}", f"late:start:{second.pid}"]
    assert runs("late", "end") == [f"late:end:{second.pid}"]


@BOTH
def test_kill9_mid_task_early_ack_does_not_run_it_again(app, start_worker):
    from tests.proj.tasks import add, sleep

    first = start_worker("-P", "solo", extra_env=VISIBILITY)
    result = sleep.delay(0.5, "early")
    started("early")
    kill9(first)
    killed_at = time.time()
    start_worker("-P", "solo", extra_env=VISIBILITY)
    # Every claim of the dead worker expires by killed_at + 1.5 s; the next claim made
    # after that (the probe's) would hand the message out again, ahead of the probe.
    time.sleep(max(0.0, killed_at + 1.7 - time.time()))
    assert add.delay(1, 1).get(timeout=scaled(10)) == 2
    assert len(runs("early")) == 1
    assert result.state == "PENDING"


@BOTH
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_healthy_worker_never_gets_a_message_twice(app, start_worker, pool):
    from tests.proj.tasks import sleep, sleep_late

    # A slow machine stretches both, so the tasks still run four visibilities long.
    fast = {"BEATQ_TEST_VISIBILITY": str(scaled(1))}
    busy = start_worker("-P", pool, "-c", "2", extra_env=fast)
    early = sleep.delay(scaled(4), "long-early")
    late = sleep_late.delay(scaled(4), "long-late")
    started("long-early")
    started("long-late")
    # An idle worker on the same queue, claiming (and so requeueing expired claims)
    # every couple of seconds, all along the 4 s the tasks run past their 1 s visibility.
    start_worker("-P", "solo", extra_env=fast)

    assert early.get(timeout=scaled(10)) == "long-early"
    assert late.get(timeout=scaled(10)) == "long-late"
    pids = {r.rsplit(":", 1)[1] for r in journal("runs")}
    assert len(runs("long-early")) == 1 and len(runs("long-late")) == 1
    assert len(runs("long-early", "end")) == 1 and len(runs("long-late", "end")) == 1
    if pool == "threads":
        assert pids == {str(busy.pid)}
    else:
        assert str(busy.pid) not in pids and len(pids) == 2  # its two children


POOLS = [["-P", "solo"], ["-P", "threads", "-c", "2"], ["-P", "prefork", "-c", "2"]]


@BOTH
@pytest.mark.parametrize("pool", POOLS, ids=lambda p: p[1])
def test_eta_tasks_start_at_their_eta_never_before(app, start_worker, pool):
    """A worker claims a delayed message ahead of its eta (worker.execute.AHEAD) and the
    pool holds it: each task still starts at its eta, not before."""
    from tests.proj.tasks import res_stamp

    start_worker(*pool)
    first = time.time() + scaled(0.5)
    etas = [first + 0.03 * i for i in range(8)]  # closer together than AHEAD
    results = [res_stamp.apply_async(eta=eta) for eta in etas]
    starts = [r.get(timeout=scaled(10)) for r in results]
    early = [(round(eta - start, 4)) for start, eta in zip(starts, etas) if start < eta]
    assert early == [], "seconds before their eta that tasks started"


@BOTH
def test_a_chunk_sharing_one_eta_runs_each_once_never_early_in_both_children(app, start_worker):
    """40 ETA tasks sent in one batch with one eta (bench/eta.py's shape): a prefork
    worker claims them ahead, a prefetch at a time, and its two children run each once,
    none before the eta; nothing is left claimed."""
    from tests.proj.tasks import dl_span

    start_worker("-P", "prefork", "-c", "2")
    eta = time.time() + scaled(1.0)
    tags = [f"c{i}" for i in range(40)]
    results = dl_span.apply_many([(0.0, tag) for tag in tags], eta=eta)
    assert sorted(r.get(timeout=scaled(15)) for r in results) == sorted(tags)
    spans = [line.split() for line in journal("spans")]
    assert sorted(tag for tag, *_ in spans) == sorted(tags), "each once"
    assert min(float(start) for _, _, start, _ in spans) >= eta, "none before the eta"
    assert len({pid for _, pid, _, _ in spans}) == 2, "both children ran some"
    assert claimed(app) == set()


@pytest.mark.parametrize("pool", POOLS, ids=lambda p: p[1])
def test_sigterm_finishes_running_task_and_takes_no_new_one(app, start_worker, pool):
    from tests.proj.tasks import add, sleep

    worker = start_worker(*pool)
    running = sleep.delay(1, "warm")
    started("warm")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM received" in worker.log(), 5, "the signal to be handled")
    after = add.delay(2, 3)

    assert running.get(timeout=scaled(5)) == "warm"
    assert worker.wait(10) == 0
    assert "warm shutdown" in worker.log()
    assert after.state == "PENDING"
    assert app.broker.queue_length("celery") == 1
    start_worker("-P", "solo")
    assert after.get(timeout=scaled(10)) == 5
    assert len(runs("warm")) == 1


@BOTH
@pytest.mark.parametrize(
    "pool, second",
    [(POOLS[0], signal.SIGTERM), (POOLS[1], signal.SIGINT), (POOLS[2], signal.SIGTERM)],
    ids=["solo-TERM", "threads-INT", "prefork-TERM"],
)
def test_second_signal_stops_at_once_and_requeues_running_task(app, start_worker, pool, second):
    from tests.proj.tasks import sleep

    worker = start_worker(*pool)
    result = sleep.delay(1.5, "cold")
    started("cold")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM received" in worker.log(), 5, "the first signal")
    stopped_at = time.monotonic()
    worker.signal(second)
    code = worker.wait(5)
    assert time.monotonic() - stopped_at < scaled(3), "a second signal stops at once"
    assert code == 0
    assert runs("cold", "end") == [], "the task was cut short"
    log = worker.log()
    assert "stopping now" in log
    assert f"they go back to their queue: {result.id}" in log, log
    assert app.broker.queue_length("celery") == 1

    other = start_worker("-P", "solo")
    assert result.get(timeout=scaled(10)) == "cold"
    assert AsyncResult(result.id, app=app).state == "SUCCESS"
    starts = runs("cold")
    assert len(starts) == 2 and starts[1] == f"cold:start:{other.pid}"
    assert runs("cold", "end") == [f"cold:end:{other.pid}"]


@BOTH
@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_stop_mid_drain_runs_every_task_once(app, start_worker, pool):
    """With a finished task's slot going straight to the next buffered claim from a pool
    thread (Handoff.follow), a warm stop mid-drain still finishes what runs and returns the
    rest of the buffer to the queue: each task runs once, none is lost."""
    from tests.proj.tasks import sleep

    results = [sleep.delay(0.02, f"d{i}") for i in range(120)]
    worker = start_worker("-P", pool, "-c", "2", "--prefetch-multiplier", "8")
    ended = lambda: [r for r in journal("runs") if ":end:" in r]  # noqa: E731
    wait_for(lambda: len(ended()) >= 20, scaled(20), "the drain to be under way")
    worker.signal(signal.SIGTERM)
    assert worker.wait(scaled(10)) == 0
    ran_first = len(ended())
    assert ran_first == len(journal("runs")) - ran_first, "what started, finished"
    assert 20 <= ran_first < 120, "stopped mid-way, buffer still full"
    assert app.broker.queue_length("celery") == 120 - ran_first

    start_worker("-P", "solo")
    assert [r.get(timeout=scaled(20)) for r in results] == [f"d{i}" for i in range(120)]
    starts = [r.split(":")[0] for r in journal("runs") if ":start:" in r]
    assert sorted(starts) == sorted(f"d{i}" for i in range(120)), "each ran exactly once"


def test_idle_worker_stops_at_once_on_sigterm(app, start_worker):
    worker = start_worker("-P", "solo")
    signalled = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(5) == 0
    assert time.monotonic() - signalled < 1.5, "not held up by its 2 s idle wait for work"
    assert worker.name not in app.broker.workers()
    assert "stopped" in worker.log()


@BOTH
def test_an_acks_late_task_sent_as_acknowledged_at_claim_is_run_and_said_once(app, start_worker):
    """The sender decides at send time whether a message is acknowledged as it is claimed.
    A sender whose definition of the task is not acks_late (another version of the code)
    gets at-most-once delivery for it: the worker runs it, and warns once, naming the task."""
    from beatq.brokers import Outgoing
    from tests.proj.tasks import sleep_late

    worker = start_worker("-P", "solo")
    results = []
    for tag in ("sent-a", "sent-b"):
        message, body = app.build_message(sleep_late.name, (0.01, tag), task=sleep_late)
        app.broker.send([Outgoing(message.queue, message.id, body, None, True)])
        results.append(AsyncResult(message.id, app=app))
    assert [r.get(timeout=scaled(10)) for r in results] == ["sent-a", "sent-b"]
    warning = f"Task {sleep_late.name} is acks_late in this worker, but its sender marked"
    wait_for(lambda: warning in worker.log(), 5, "the warning")
    assert worker.log().count(warning) == 1
