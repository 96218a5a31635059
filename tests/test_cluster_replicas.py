"""redis+cluster:// with writes that wait for replicas (issue 24): `min_replicas` sends wait
for a replica of their queue's master, and the beat takes its lease and counts a dispatch
only once a replica of {home}'s master has it (`beat_min_replicas`, 1 by default on a
cluster), as behind Sentinel (tests/test_sentinel.py).

A replica is paused (SIGSTOP) to hold its confirmation back, for less than the nodes'
timeout where the test needs it back soon; the session's cluster is whole again after
each test.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from beatq.brokers import BeatDispatch, Outgoing, connect
from beatq.brokers.cluster import ClusterBackend
from beatq.exceptions import LeaseLost, NotReplicated
from tests.conftest import scaled, wait_for

pytestmark = pytest.mark.backends("cluster")

TIMEOUT = 0.5  # min_replicas_timeout of these tests' backends


@pytest.fixture
def open_backend(cluster_url: str) -> Iterator:
    opened: list[ClusterBackend] = []

    def open_one(**options: object) -> ClusterBackend:
        prefix = f"bqr-{uuid.uuid4().hex[:10]}"
        found = connect(cluster_url, {"global_keyprefix": prefix, **options})
        assert isinstance(found, ClusterBackend)
        opened.append(found)
        return found

    yield open_one
    for backend in opened:
        backend.close()


@contextmanager
def paused(cluster, port: int) -> Iterator[None]:
    """The node on `port` stopped (SIGSTOP) for the block; afterwards the cluster whole."""
    process = cluster.servers[port]
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)
        wait_for(cluster.ok, 30, "the cluster whole again")


def on_replica(port: int, *command: object) -> object:
    """`command` read on the replica on `port` (READONLY: a replica answers its slots)."""
    with redis.Redis(port=port, socket_timeout=5) as replica:
        pipe = replica.pipeline(transaction=False)
        pipe.execute_command("READONLY")
        pipe.execute_command(*command)
        return pipe.execute()[1]


def test_a_send_with_min_replicas_returns_once_its_queues_replica_has_it(
    cluster, open_backend
) -> None:
    b = open_backend(min_replicas=1, min_replicas_timeout=TIMEOUT)
    queue = "rq"
    key = b.unit(queue).msgs
    replica = cluster.replica_of(cluster.master_of(key))
    b.send([Outgoing(queue, "m1", b"x")])
    assert on_replica(replica, "HEXISTS", key, "m1") == 1, "the replica had it on return"
    with paused(cluster, replica):
        started = time.monotonic()
        with pytest.raises(NotReplicated, match=r"queue 'rq'.*reached 0 of the 1 replica"):
            b.send([Outgoing(queue, "m2", b"x")])
        assert TIMEOUT <= time.monotonic() - started < TIMEOUT + scaled(1.0)
        assert b.queue_length(queue) == 2  # the master has it: lost only if it fails now
    b.send([Outgoing(queue, "m3", b"x")])
    assert on_replica(replica, "HMGET", key, "m2", "m3")[1] is not None
    assert [c.id for c in b.claim([queue], 10, 30).claims] == ["m1", "m2", "m3"]


def test_the_fencing_token_is_on_homes_replica_whenever_a_lease_is_taken(
    cluster, open_backend
) -> None:
    """beat_min_replicas is 1 on a cluster by default: a token is handed out only once a
    replica of {home}'s master has it, so a promoted replica never hands it out again."""
    b = open_backend(min_replicas_timeout=TIMEOUT)
    fence = b.keys.fence("beat")
    replica = cluster.replica_of(cluster.master_of(fence))
    for holder in ("a", "b", "c"):
        token = b.acquire_lease("beat", holder, 30)
        assert token is not None
        assert int(on_replica(replica, "GET", fence)) == token
        b.release_lease("beat", holder, token)
    with paused(cluster, replica):
        with pytest.raises(NotReplicated, match=r"beat's lease.*\{home\}'s master"):
            b.acquire_lease("beat", "d", 30)
        assert b.get_lease("beat") is None  # given back: no one is kept from it
    token = wait_for(lambda: _acquire(b, "e"), 10, "a lease a replica confirms")
    assert int(on_replica(replica, "GET", fence)) == token


def _acquire(b: ClusterBackend, holder: str) -> int | None:
    try:
        return b.acquire_lease("beat", holder, 30)
    except NotReplicated:
        return None


def test_a_dispatch_no_replica_confirmed_waits_in_the_outbox_for_the_next_leader(
    cluster, open_backend
) -> None:
    """A dispatch on a {home} master cut off from its replica: the run is settled there,
    its message stays in the outbox (no worker sees it) and the leader steps down. The
    next leader, once a replica confirms its lease, sends it: once."""
    b = open_backend(min_replicas_timeout=TIMEOUT)
    replica = cluster.replica_of(cluster.master_of(b.keys.prefix))
    token = b.acquire_lease("beat", "b1", 30)
    slot = time.time()
    run = BeatDispatch("e", slot, slot + 60, b"{}", [Outgoing("rd", "run-1", b"x")])
    assert b.beat_dispatch_many("beat", "b1", token, [run]) == ["sent"]
    assert [c.id for c in b.claim(["rd"], 10, 30).claims] == ["run-1"]
    with paused(cluster, replica):
        run2 = BeatDispatch("e", slot + 60, slot + 120, b"{}", [Outgoing("rd", "run-2", b"x")])
        with pytest.raises(LeaseLost, match="reached 0 of the 1 replica"):
            b.beat_dispatch_many("beat", "b1", token, [run2])
        assert b.get_lease("beat") is None  # given up at once
        assert b.beat_entry("e").settled == slot + 60
        assert b.queue_length("rd") == 0 and b.scheduled() == []  # held in the outbox
    token2 = wait_for(lambda: _acquire(b, "b2"), 10, "a lease a replica confirms")
    assert token2 > token
    assert [c.id for c in b.claim(["rd"], 10, 30).claims] == ["run-2"]
    assert b.client.zcard(b.keys.beat_held) == 0
    # a trigger's run (app.schedules) waits for the replica the same way
    assert b.schedule_request("req-1", b"{}", 60.0)
    out = [Outgoing("rd", "trig-1", b"t")]
    assert b.schedule_run("beat", "b2", token2, "req-1", slot, True, out) == "sent"
    assert [c.id for c in b.claim(["rd"], 10, 30).claims] == ["trig-1"]


def test_a_beat_on_a_master_without_replicas_says_once_why_it_does_not_lead(
    cluster, open_backend, caplog: pytest.LogCaptureFixture
) -> None:
    """The default asks for a replica: a beat whose {home} master has none does not lead,
    and says so once, naming the option that lets it lead without."""
    from beatq import Beatq
    from beatq.beat.beat import Beat

    caplog.set_level(logging.WARNING, "beatq.beat")
    b = open_backend(min_replicas_timeout=0.1)
    app = Beatq("lone")
    app.conf.update(
        broker_url=b.url,
        broker_transport_options={"global_keyprefix": b.base, "min_replicas_timeout": 0.1},
    )
    beat = Beat(app, files=[], lease_ttl=5)
    beat.standby_poll = 0.05
    replica = cluster.replica_of(cluster.master_of(b.keys.prefix))
    thread = threading.Thread(target=beat.run, daemon=True)
    try:
        with paused(cluster, replica):
            thread.start()
            wait_for(lambda: "cannot lead" in caplog.text, 5, "the beat to say why")
            time.sleep(0.5)  # several attempts, each refused (the lease given back)
            assert not beat.lease.held and "is the leader now" not in caplog.text
            assert caplog.text.count("cannot lead") == 1, caplog.text
            assert "'beat_min_replicas': 0" in caplog.text
        wait_for(lambda: b.get_lease("beat") is not None, 10, "the lead once the replica is back")
        assert "a replica confirmed the lease" in caplog.text
    finally:
        beat.stop()
        thread.join(10)
        app.close()
