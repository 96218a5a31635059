"""SPEC §6 in the pools test_reconnect leaves to solo: a lost broker connection is retried
with backoff and logged, nothing crashes or is lost. A prefork child and a threads pool
store their results over connections of their own; a cut across them loses nothing."""

from __future__ import annotations

import pytest

from tests.conftest import scaled, wait_for
from tests.proj import journal
from tests.test_reconnect import behind
from tests.test_reconnect import proxy as proxy_fixture

proxy = proxy_fixture  # a TCP proxy in front of the test Redis that can cut every connection


@pytest.mark.parametrize(
    "pool", [["-P", "prefork", "-c", "2"], ["-P", "threads", "-c", "2"]], ids=lambda p: p[1]
)
def test_tasks_running_and_queued_across_a_cut_are_not_lost(
    app, start_worker, proxy, redis_url, pool
):
    from tests.proj.tasks import add, dl_nap

    # a claim whose reply the cut lost comes back as it expires (see `behind`)
    worker = start_worker(*pool, extra_env=behind(proxy, redis_url, visibility=5))
    running = [dl_nap.delay(0.5, f"across{i}") for i in range(2)]
    queued = [add.delay(i, i) for i in range(6)]
    wait_for(
        lambda: len([n for n in journal("naps") if n.endswith(":start")]) == 2, 5, "both to start"
    )
    proxy.cut()
    # Both end during the cut: their results wait for the broker, not lost.
    wait_for(lambda: len([n for n in journal("naps") if n.endswith(":end")]) == 2, 5, "both to end")
    wait_for(lambda: "broker unreachable (" in worker.log(), 5, "the failed store to be logged")
    proxy.restore()

    assert sorted(r.get(timeout=scaled(20)) for r in running) == ["across0", "across1"]
    assert [r.get(timeout=scaled(20)) for r in queued] == [0, 2, 4, 6, 8, 10]
    assert sorted(journal("naps")) == sorted(
        f"across{i}:{what}" for i in range(2) for what in ("start", "end")
    ), "each ran once"
    assert app.broker.queue_length("celery") == 0
    assert worker.process.poll() is None, worker.log()
