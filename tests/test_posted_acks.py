"""An acknowledgement on its way (Delivery.acknowledge; on Redis, redis_calls.Calls.post):
a task acknowledged as it starts is started once the acknowledgement is written, before
the server answers. Written is enough: a process killed the next instant still has it
reach the store, and one whose connection broke before the server read it is sent again.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import redis

from beatq.brokers import Outgoing
from tests.conftest import stored_messages, wait_for

pytestmark = pytest.mark.backends("redis")


def _claim_one(app, body: bytes = b"x"):
    app.broker.send([Outgoing("celery", f"m-{time.monotonic_ns()}", body)])
    [claim] = app.broker.claim(["celery"], 1, 30).claims
    return claim


def test_an_acknowledgement_written_before_a_kill9_reaches_the_store(app, env) -> None:
    # A child process claims a message, writes its acknowledgement and kills itself with
    # SIGKILL before any reply could come: the server still acknowledges it.
    script = textwrap.dedent(
        """
        import os, signal
        from tests.conftest import point_app
        from beatq.brokers import Outgoing
        app = point_app(os.environ["BEATQ_BROKER_URL"], os.environ["BEATQ_TEST_PREFIX"], 30)
        app.broker.send([Outgoing("celery", "killed-after-ack", b"x")])
        [claim] = app.broker.claim(["celery"], 1, 30).claims
        app.broker.acknowledge([claim])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env={**env}, timeout=60)
    assert proc.returncode == -9
    assert wait_for(lambda: stored_messages(app) == [], 5, "the acknowledgement to land")


def test_an_acknowledgement_lost_with_its_connection_is_sent_again(app, redis_url) -> None:
    broker = app.broker
    claim = _claim_one(app)
    admin = redis.Redis.from_url(redis_url)
    me = broker.calls.command("CLIENT", "ID")
    # the server holds writes back unread: the acknowledgement waits in its query buffer,
    # and goes with the connection killed meanwhile
    admin.client_pause(5000, all=False)
    try:
        broker.acknowledge([claim])
        assert [m.id for m in stored_messages(app)] == [claim.id]
        admin.client_kill_filter(_id=me)
    finally:
        admin.client_unpause()
    assert [m.id for m in stored_messages(app)] == [claim.id], "not acknowledged: lost"
    broker.confirm()  # reads the replies: the connection broke, so it is sent again
    assert stored_messages(app) == []
    assert broker.claim(["celery"], 1, 30).claims == []  # the connection serves the next call
    admin.close()


def test_acknowledgements_on_their_way_are_read_before_the_next_call(app) -> None:
    broker = app.broker
    claims = [_claim_one(app) for _ in range(5)]
    for claim in claims:
        broker.acknowledge([claim])
    # the next call on this thread's connection reads their replies first, then its own
    assert broker.claim(["celery"], 1, 30).claims == []
    assert broker.calls.local.posted == []
    assert stored_messages(app) == []
