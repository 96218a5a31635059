"""`-Q` urgency against work a busy worker already holds, with real worker processes.

SPEC §6: `-Q` lists the queues a worker consumes, the first the most urgent. A busy
worker claims ahead (its buffer, and in prefork the claims handed to a busy child behind
its task); what it holds that way must not run before more urgent work sent since.
Issue 22 §1.1: on Redis, `normal0, normal1, normal2` ran before any `urgent` one.
"""

from __future__ import annotations

import time

import pytest

from beatq.worker.worker import Worker
from tests.conftest import scaled, steady, wait_for
from tests.proj import journal, record

POOLS = {
    "prefork": ["-P", "prefork", "-c", "1"],
    "threads": ["-P", "threads", "-c", "1"],
    "solo": ["-P", "solo"],
}


def runs(prefix: str) -> list[str]:
    """The "runs" journal entries of the `sleep` task whose tag starts with `prefix`."""
    return [r for r in journal("runs") if r.startswith(prefix)]


@pytest.mark.backends("redis", "sqlite", "memory", "cluster")
@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("normal_sent", ["while busy", "before start"])
def test_urgent_work_sent_while_busy_runs_before_the_normal_work_held(
    app, start_worker, backend, pool, normal_sent, request
):
    from tests.proj.tasks import held, ordered, urgent

    if backend == "memory" and pool == "prefork":
        pytest.skip("memory:// serves one process: no prefork children")
    # held until released below: however slow the machine, it runs while the urgent work is sent
    long = held.apply_async(("long", scaled(30)), queue="celery")
    request.addfinalizer(lambda: record("release", "long"))  # a failed test lets it go too
    normal = []
    if normal_sent == "before start":  # claimed with the long task, in the first claims
        normal = [ordered.delay(f"normal{i}") for i in range(4)]
    # the pool and the prefetch multiplier at their defaults: 4 claims ahead
    start_worker(*POOLS[pool], "-Q", "priority.high,celery")
    wait_for(lambda: runs("long:start"), 10, "the long task to start")
    if normal_sent == "while busy":
        normal = [ordered.delay(f"normal{i}") for i in range(4)]
    # solo claims nothing while it runs a task
    holds_normal = pool != "solo" or normal_sent == "before start"
    if holds_normal:
        # how many it takes ahead depends on how the sends and its claims interleave: a
        # wait woken by normal0 claims it; a top-up that found none yet (normal1 not sent)
        # puts the next off a while (Handoff.dried), so at least one is held
        wait_for(
            lambda: app.broker.queue_length("celery") <= 3,
            5,
            "the busy worker to claim normal tasks ahead",
        )
    sent = [urgent.delay(f"urgent{i}") for i in range(4)]
    assert runs("long:end") == [], "the urgent tasks were sent while the long one ran"
    if holds_normal and pool != "solo":
        # a worker holding less urgent claims looks for more urgent work every
        # URGENT_EVERY (0.1 s): it takes urgent tasks and gives back as many normal ones.
        # Urgent work sent within that look's interval before a slot frees may still
        # find a held normal task ahead of it (a look between two sends took urgent0
        # alone, and normal0 ran before the next look took urgent1), so the long task
        # ends only once the looks have taken all they will: no change for several looks.
        wait_for(
            steady(
                lambda: tuple(map(app.broker.queue_length, ["priority.high", "celery"])),
                lambda lengths: lengths[0] < 4,
                scaled(5 * Worker.URGENT_EVERY),
            ),
            5,
            "the busy worker to take the urgent tasks ahead",
        )
    elif holds_normal:
        # solo runs the task in the worker's own thread: it looks between tasks, when the
        # last look is URGENT_EVERY old (its last was before the long task started)
        time.sleep(3 * Worker.URGENT_EVERY)
    record("release", "long")

    assert long.get(timeout=scaled(15)) == "long"
    for result in sent + normal:
        result.get(timeout=scaled(10))
    expected = [f"urgent{i}" for i in range(4)] + [f"normal{i}" for i in range(4)]
    assert journal("order") == expected
