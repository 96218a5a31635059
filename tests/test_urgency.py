"""`-Q` urgency against work a busy worker already holds, with real worker processes.

SPEC §6: `-Q` lists the queues a worker consumes, the first the most urgent. A busy
worker claims ahead (its buffer, and in prefork the claims handed to a busy child behind
its task); what it holds that way must not run before more urgent work sent since.
Issue 22 §1.1: on Redis, `normal0, normal1, normal2` ran before any `urgent` one.
"""

from __future__ import annotations

import pytest

from tests.conftest import scaled, wait_for
from tests.proj import journal

POOLS = {
    "prefork": ["-P", "prefork", "-c", "1"],
    "threads": ["-P", "threads", "-c", "1"],
    "solo": ["-P", "solo"],
}


def runs(prefix: str) -> list[str]:
    """The "runs" journal entries of the `sleep` task whose tag starts with `prefix`."""
    return [r for r in journal("runs") if r.startswith(prefix)]


@pytest.mark.backends("redis", "sqlite", "memory")
@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("normal_sent", ["while busy", "before start"])
def test_urgent_work_sent_while_busy_runs_before_the_normal_work_held(
    app, start_worker, backend, pool, normal_sent
):
    from tests.proj.tasks import ordered, sleep, urgent

    if backend == "memory" and pool == "prefork":
        pytest.skip("memory:// serves one process: no prefork children")
    long = sleep.apply_async((scaled(2.0), "long"), queue="celery")
    normal = []
    if normal_sent == "before start":  # claimed with the long task, in the first claims
        normal = [ordered.delay(f"normal{i}") for i in range(4)]
    # the pool and the prefetch multiplier at their defaults: 4 claims ahead
    start_worker(*POOLS[pool], "-Q", "priority.high,celery")
    wait_for(lambda: runs("long:start"), 10, "the long task to start")
    if normal_sent == "while busy":
        normal = [ordered.delay(f"normal{i}") for i in range(4)]
    if pool != "solo" or normal_sent == "before start":  # solo claims nothing as it runs
        # how many it takes ahead depends on how the sends and its claims interleave;
        # at least three fit beside the long task with the default prefetch
        wait_for(
            lambda: app.broker.queue_length("celery") <= 1,
            5,
            "the busy worker to claim normal tasks ahead",
        )
    sent = [urgent.delay(f"urgent{i}") for i in range(4)]
    assert runs("long:end") == [], "the urgent tasks were sent while the long one ran"

    assert long.get(timeout=scaled(15)) == "long"
    for result in sent + normal:
        result.get(timeout=scaled(10))
    expected = [f"urgent{i}" for i in range(4)] + [f"normal{i}" for i in range(4)]
    assert journal("order") == expected
