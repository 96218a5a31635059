"""Revoking tasks that wait in a busy prefork child, one after another (Redis and SQLite).

A busy child reads its pipe only between tasks. The claims waiting in it are taken back when
one of them is revoked; sent to it again, each revocation added copies to a pipe nobody read,
until a send blocked the thread that renews the worker's claims and reads revocations: the
revocations stopped, the heartbeat stopped, and the running task's claim could expire."""

from __future__ import annotations

import pytest

from beatq import AsyncResult
from tests.conftest import scaled, wait_for
from tests.proj import journal, record
from tests.test_delivery import started

BODY = "x" * (28 * 1024)  # under QUEUE_BODY_MAX: such a claim waits in the busy child


@pytest.mark.backends("redis", "sqlite")
def test_revocations_one_after_another_behind_a_busy_child_each_land(app, start_worker, request):
    from tests.proj.tasks import held, sleep

    request.addfinalizer(lambda: record("release", "long"))
    start_worker("-P", "prefork", "-c", "1")
    long = held.delay("long", 60)
    started("long")
    sent = [sleep.apply_async((0, f"t{i}:{BODY}")) for i in range(10)]
    for i in range(1, 8):  # the second in line each time: t1, then t2 taken in its place...
        app.control.revoke(sent[i].id)
        result = AsyncResult(sent[i].id, app=app)
        wait_for(lambda r=result: r.state == "REVOKED", scaled(5), f"t{i} revoked")
    record("release", "long")
    assert long.get(timeout=scaled(20)) == "long"
    for kept in (0, 8, 9):
        assert sent[kept].get(timeout=scaled(10)) == f"t{kept}:{BODY}"
    ran = [entry.split(":")[0] for entry in journal("runs") if ":start:" in entry]
    assert sorted(t for t in ran if t != "long") == ["t0", "t8", "t9"]
