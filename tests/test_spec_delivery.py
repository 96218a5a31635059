"""SPEC §4 and §6 promises on the worker's claim path that no other test pins down.

- A live worker renews its claims: a message a busy worker holds in its buffer (claimed,
  not started) past the visibility timeout is never handed to another worker.
- Waiting ETA tasks are held by the broker, not in worker memory: a worker claims none of
  them ahead of time, and they hold up no ready work.
- `expires`: a task not started by then is not run, even when it was claimed before then
  and waited in a busy worker (the check is at its start, not at its claim).
- At most once: a worker paused past its visibility timeout, whose buffered claims went to
  another worker and ran there, does not run them again when it resumes.

Real worker processes through the CLI, on Redis and SQLite.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone

import pytest

from beatq.exceptions import TaskRevokedError
from tests.conftest import scaled, stored_messages, wait_for
from tests.proj import journal, record
from tests.test_delivery import claimed, runs, started
from tests.test_pools import children_of

BOTH = pytest.mark.backends("redis", "sqlite")


def busy_holding(start_worker, pool, request, n):
    """A worker (`pool`) with a 1 s visibility timeout running a long held task, and `n`
    quick ones sent before it started, claimed behind it (its first claim takes them all).
    The worker, the long task's result, the quick ones', and the visibility."""
    from tests.proj.tasks import held, sleep

    visibility = scaled(1)
    long = held.apply_async(("long", scaled(30)))
    request.addfinalizer(lambda: record("release", "long"))
    waiting = [sleep.delay(0.01, f"b{i}") for i in range(n)]
    worker = start_worker(*pool, extra_env={"BEATQ_TEST_VISIBILITY": str(visibility)})
    started("long")
    return worker, long, waiting, visibility


@BOTH
@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "prefork", "-c", "1"]], ids=lambda p: p[1])
def test_claims_a_busy_worker_holds_past_the_visibility_timeout_are_never_redelivered(
    app, start_worker, pool, request
):
    busy, long, waiting, visibility = busy_holding(start_worker, pool, request, 3)
    fast = {"BEATQ_TEST_VISIBILITY": str(visibility)}
    ids = {r.id for r in waiting}
    wait_for(lambda: claimed(app) >= ids, 5, "the three held, claimed and not started")
    # An idle worker on the same queue claims all along, so an expired claim would be its.
    idle = start_worker("-P", "solo", extra_env=fast)
    time.sleep(3 * visibility)  # three visibilities with the three claims held, not started
    assert app.broker.queue_length("celery") == 0, "no held claim came back to the queue"
    record("release", "long")

    assert long.get(timeout=scaled(10)) == "long"
    assert [r.get(timeout=scaled(10)) for r in waiting] == ["b0", "b1", "b2"]
    for tag in ("long", "b0", "b1", "b2"):
        (entry,) = runs(tag)
        assert not entry.endswith(f":{idle.pid}"), f"{tag} was delivered to the idle worker"
    assert claimed(app) == set()
    assert busy.process.poll() is None


@BOTH
def test_eta_tasks_wait_in_the_broker_not_in_the_worker_and_hold_up_nothing(app, start_worker):
    from tests.proj.tasks import add

    later = [add.apply_async((i, 0), countdown=3600) for i in range(300)]
    worker = start_worker("-P", "threads", "-c", "2")
    began = time.monotonic()
    assert add.delay(2, 2).get(timeout=scaled(5)) == 4
    assert time.monotonic() - began < scaled(2), "ready work is not held up by 300 ETA tasks"
    # two claim rounds more: an idle worker waits for work, and would claim ETA ones here
    time.sleep(scaled(2.5))
    states = {m.id: m.state for m in stored_messages(app)}
    assert states == {r.id: "delayed" for r in later}, "every ETA task waits in the broker"
    assert {claim.id for _, claim in app.broker.scheduled(limit=1000)} == {r.id for r in later}
    assert worker.process.poll() is None


@BOTH
@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "prefork", "-c", "1"]], ids=lambda p: p[1])
def test_a_task_that_expires_while_it_waits_in_a_busy_worker_is_not_run(
    app, start_worker, pool, request
):
    from beatq import AsyncResult
    from tests.proj.tasks import errback_old, held, sleep

    start_worker(*pool)
    request.addfinalizer(lambda: record("release", "long"))
    # Sent in one step to the idle worker, so its next claim takes all three: the two
    # wait behind the long one. The expiry is set now that the worker is up.
    expires = time.time() + scaled(1)
    at = datetime.fromtimestamp(expires, timezone.utc)  # a float would be seconds from now
    calls = [
        (held, ("long", scaled(30)), {}),
        (sleep, (0, "doomed"), {"expires": at, "link_error": errback_old.s()}),
        (sleep, (0, "fine"), {"expires": 3600}),
    ]
    outgoing = []
    for task, args, options in calls:
        message, body = app.build_message(task.name, args, {}, task, **options)
        outgoing.append(app.outgoing(message, body, task))
    app.broker.send(outgoing)
    long, doomed, fine = (AsyncResult(m.id, app=app) for m in outgoing)
    started("long")
    wait_for(lambda: claimed(app) >= {doomed.id, fine.id}, 5, "the two claimed behind it")
    assert time.time() < expires, "claimed before they expire (else this proves nothing)"
    wait_for(lambda: time.time() > expires + 0.1, 5, "the expiry to pass")
    record("release", "long")

    assert long.get(timeout=scaled(10)) == "long"
    with pytest.raises(TaskRevokedError, match="expired"):
        doomed.get(timeout=scaled(10))
    assert doomed.state == "REVOKED"
    assert fine.get(timeout=scaled(10)) == "fine"
    assert runs("doomed") == [], "an expired task never runs"
    wait_for(lambda: journal("errback") == [f"old:{doomed.id}"], 5, "the errback, once")


@BOTH
@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "prefork", "-c", "1"]], ids=lambda p: p[1])
def test_a_cold_stop_puts_back_at_once_what_runs_and_what_waits_in_the_buffer(
    app, start_worker, pool
):
    """SPEC §6: a second signal stops at once and nothing vanishes: the running task and
    the three claimed behind it are back in their queue as the worker exits, not after the
    visibility timeout (60 s here), and each runs once after."""
    import signal

    from tests.proj.tasks import sleep

    running = sleep.delay(scaled(3), "cut")
    waiting = [sleep.delay(0.01, f"w{i}") for i in range(3)]
    worker = start_worker(*pool)  # its first claim takes all four
    started("cut")
    # the running one was acknowledged as it started; the three wait, claimed
    ids = {r.id for r in waiting}
    wait_for(lambda: claimed(app) == ids, 5, "the three claimed behind it")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM received" in worker.log(), 5, "the first signal")
    worker.signal(signal.SIGTERM)
    assert worker.wait(5) == 0
    assert claimed(app) == set(), "no claim left to expire"
    assert app.broker.queue_length("celery") == 4, "all four back in their queue at once"

    start_worker("-P", "solo")
    assert [r.get(timeout=scaled(10)) for r in waiting] == ["w0", "w1", "w2"]
    assert running.get(timeout=scaled(10)) == "cut"
    assert [len(runs(f"w{i}")) for i in range(3)] == [1, 1, 1], "each waiting task ran once"


@BOTH
@pytest.mark.parametrize(
    "pool", [["-P", "threads", "-c", "2"], ["-P", "prefork", "-c", "2"]], ids=lambda p: p[1]
)
def test_kill9_mid_task_runs_it_again_only_when_acks_late_in_every_pool(app, start_worker, pool):
    """SPEC §6 in the pools test_delivery leaves to solo: kill -9 of the worker while an
    acks_late task and an early-acknowledged one run: the first runs again elsewhere (at
    least once), the second does not (at most once)."""
    import os
    import signal

    from tests.proj.tasks import add, sleep, sleep_late

    visibility = {"BEATQ_TEST_VISIBILITY": "1.5"}
    first = start_worker(*pool, extra_env=visibility)
    late = sleep_late.delay(scaled(3), "late")
    sleep.delay(scaled(3), "early")
    started("late")
    started("early")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(5)
    killed_at = time.time()
    start_worker("-P", "solo", extra_env=visibility)

    assert late.get(timeout=scaled(15)) == "late"
    assert len(runs("late")) == 2, "run again elsewhere"
    # every claim of the dead worker has expired and been looked at by the next claim
    time.sleep(max(0.0, killed_at + 1.7 - time.time()))
    assert add.delay(1, 1).get(timeout=scaled(10)) == 2
    # (a prefork child orphaned mid-task may still finish it: once all the same)
    assert len(runs("early")) == 1, "not run again"


@BOTH
def test_kill9_of_a_prefork_parent_runs_what_waited_in_its_child_once(app, start_worker):
    """SPEC §6: messages a dead worker had taken but not started go back to their queue and
    run once. In prefork some of them wait in a busy child behind its task (QUEUED): the
    child, orphaned by a kill -9 of its parent, must not run them too once they came back:
    it ends with its parent (prefork._die_with), mid-task, as on a power loss."""
    import os
    import signal

    from tests.proj.tasks import sleep

    visibility = {"BEATQ_TEST_VISIBILITY": "1.5"}
    long = sleep.delay(scaled(4), "long")  # runs past the visibility timeout in the orphan
    behind = [sleep.delay(0.01, f"q{i}") for i in range(3)]
    first = start_worker("-P", "prefork", "-c", "1", extra_env=visibility)
    started("long")
    ids = {r.id for r in behind}
    wait_for(lambda: claimed(app) >= ids, 5, "the three taken, not started")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(5)
    start_worker("-P", "solo", extra_env=visibility)

    assert [r.get(timeout=scaled(15)) for r in behind] == ["q0", "q1", "q2"]
    (entry,) = runs("long")
    orphan = int(entry.rsplit(":", 1)[1])
    wait_for(lambda: not alive(orphan), 5, "the orphaned child to end")
    assert [len(runs(f"q{i}")) for i in range(3)] == [1, 1, 1], journal("runs")
    assert runs("long", "end") == [] and long.state == "PENDING", "ended with its parent"
    assert len(runs("long")) == 1, "acknowledged as it started: not run again"


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie no one reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_ctrl_c_stops_as_sigterm_does_finishing_what_runs(app, start_worker):
    """SPEC §6: `SIGTERM`/Ctrl-C: stop taking work, finish what is running (test_delivery
    sends SIGINT only as the second signal)."""
    import signal

    from tests.proj.tasks import add, sleep

    worker = start_worker("-P", "threads", "-c", "2")
    running = sleep.delay(1, "warm")
    started("warm")
    worker.signal(signal.SIGINT)
    wait_for(lambda: "SIGINT received" in worker.log(), 5, "the signal to be handled")
    after = add.delay(2, 3)
    assert running.get(timeout=scaled(5)) == "warm"
    assert worker.wait(10) == 0
    assert "warm shutdown" in worker.log()
    assert runs("warm", "end") == [f"warm:end:{worker.pid}"]
    assert after.state == "PENDING" and app.broker.queue_length("celery") == 1


@BOTH
@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "prefork", "-c", "1"]], ids=lambda p: p[1])
def test_a_worker_paused_past_its_visibility_timeout_does_not_run_what_ran_elsewhere(
    app, start_worker, pool, request
):
    from tests.proj.tasks import sleep

    paused, long, waiting, visibility = busy_holding(start_worker, pool, request, 2)
    fast = {"BEATQ_TEST_VISIBILITY": str(visibility)}
    ids = {r.id for r in waiting}
    wait_for(lambda: claimed(app) >= ids, 5, "the two held, claimed and not started")
    stopped = [paused.pid, *children_of(paused.pid)]
    for pid in stopped:  # the whole worker: no heartbeat renews its claims
        os.kill(pid, signal.SIGSTOP)
    request.addfinalizer(lambda: [os.kill(p, signal.SIGCONT) for p in stopped])
    time.sleep(2 * visibility)
    record("release", "long")  # it ends as soon as its worker resumes
    other = start_worker("-P", "solo", extra_env=fast)
    assert [r.get(timeout=scaled(10)) for r in waiting] == ["b0", "b1"], "redelivered, run"
    for pid in reversed(stopped):
        os.kill(pid, signal.SIGCONT)

    assert long.get(timeout=scaled(10)) == "long"
    # Done with what it holds once it runs a task sent now, alone: its claims of b0 and b1
    # may be several (a claim it had sent before its pause can run in Redis meanwhile).
    other.stop()
    assert sleep.delay(0.01, "after").get(timeout=scaled(10)) == "after"
    for tag in ("b0", "b1"):
        assert runs(tag) == [f"{tag}:start:{other.pid}"], f"{tag} ran once, where redelivered"
    assert len(runs("after")) == 1
    assert paused.log().count("not run here") >= 2, paused.log()
    assert "was delivered again" in paused.log()
    assert claimed(app) == set() and app.broker.queue_length("celery") == 0
    assert paused.process.poll() is None
