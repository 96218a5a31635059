"""Redis behind Sentinel (sentinel://, issue 24): the master found through the sentinels
and followed across a failover, the beat's guarantees kept across it, WAIT-backed sends.

The topology (tests/sentinels.py) is real: a master, two replicas and three sentinels on
free loopback ports, `kill -9` of the master, sentinels that fail over in a second or two.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beatq.brokers import Backend, BeatDispatch, Outgoing, connect
from beatq.brokers.redis import RedisBackend
from beatq.brokers.roles import Take
from beatq.exceptions import ConfigurationError, LeaseLost, NotReplicated
from tests.conftest import scaled, wait_for
from tests.sentinels import DOWN_AFTER_MS, MASTER_PASSWORD, SENTINEL_PASSWORD, Topology

SENTINEL_OPTIONS = {"sentinel_kwargs": {"password": SENTINEL_PASSWORD}}
# the sentinels' failover time: down-after, then their vote and the promotion (a second
# or two), twice when the first attempt fails; +5 s is the promise to follow it
FAILOVER_BOUND = DOWN_AFTER_MS / 1000 + 4.0 + 5.0


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    folder = tmp_path / "redis"
    folder.mkdir()
    topo = Topology(folder)
    try:
        topo.start()
        yield topo
    finally:
        topo.stop()


def backend(url: str, **options: object) -> RedisBackend:
    found = connect(url, {"global_keyprefix": "bqsent", **SENTINEL_OPTIONS, **options})
    assert isinstance(found, RedisBackend)
    return found


# -- URLs and options: refused with one clear error ------------------------------------------
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sentinel://127.0.0.1:26379", "name the master"),
        ("sentinel://127.0.0.1:26379/mymaster/zero", "not a database number"),
        ("sentinel://127.0.0.1:x/mymaster", "not a sentinel's host:port"),
        ("sentinel://127.0.0.1:26379/mymaster?ssl_ca_certs=/ca.crt", r"sentinel\+tls://"),
        ("sentinel://127.0.0.1:26379/mymaster?sockt_timeout=1", "socket_timeout"),
        ("redis+cluster://127.0.0.1:7000", "Redis Cluster"),
        ("cluster://127.0.0.1:7000", "does not run on yet"),
    ],
)
def test_bad_sentinel_urls_are_refused(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        connect(url)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"min_replicas": -1}, "min_replicas=-1"),
        ({"min_replicas": "1"}, "whole number of replicas"),
        ({"min_replicas": True}, "min_replicas=True"),
        ({"beat_min_replicas": 1.5}, "beat_min_replicas=1.5"),
        ({"min_replicas_timeout": 0}, "min_replicas_timeout=0"),
        ({"min_replicas_timeout": float("inf")}, "above 0"),
    ],
)
def test_bad_replica_options_are_refused(options: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        connect("redis://127.0.0.1:1/0", options)


def test_password_is_masked_in_errors() -> None:
    with pytest.raises(ConfigurationError) as caught:
        connect("sentinel://:hunter2@127.0.0.1:1/mymaster/x")
    assert "hunter2" not in str(caught.value) and ":***@" in str(caught.value)


# -- one Redis: WAIT with no replica to confirm ----------------------------------------------
def test_send_with_min_replicas_and_no_replica_raises(redis_url: str) -> None:
    store = connect(
        redis_url,
        {"global_keyprefix": "bqsent-lone", "min_replicas": 1, "min_replicas_timeout": 0.2},
    )
    try:
        started = time.monotonic()
        with pytest.raises(NotReplicated, match="reached 0 of the 1 replica"):
            store.send([Outgoing("q", "m1", b"body")])
        assert time.monotonic() - started >= 0.2  # it waited for the replica
        # the master has it: lost only if the master fails before a replica copies it
        assert store.queue_length("q") == 1
        # the beat waits for as many (beat_min_replicas defaults to min_replicas)
        with pytest.raises(NotReplicated, match="beat_min_replicas"):
            store.acquire_lease("beat", "b1", 5.0)
    finally:
        store.purge(["q"])
        store.disconnect()


def test_a_beat_that_must_wait_for_a_replica_does_not_lead_without_one(redis_url: str) -> None:
    store = connect(
        redis_url,
        {"global_keyprefix": "bqsent-lone2", "beat_min_replicas": 1, "min_replicas_timeout": 0.1},
    )
    try:
        with pytest.raises(NotReplicated, match="the beat's lease"):
            store.acquire_lease("beat", "b1", 5.0)
        assert store.get_lease("beat") is None  # given back: no one is kept from it
    finally:
        store.disconnect()


# -- behind Sentinel ---------------------------------------------------------------------------
def test_kept_connections_follow_the_master_after_kill_9(
    topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    """The per-thread connections of redis_calls.py (kept out of the pool) ask the
    sentinels again when their socket closes: after `kill -9` of the master, sends, claims
    and a blocking wait reach the new master within the failover time + 5 s; the switch
    is logged once."""
    store = backend(topology.url())
    other = threading.Thread  # a second thread: a kept connection of its own
    store.send([Outgoing("q", "before", b"1")])
    got: list[object] = []
    waiter = other(target=lambda: got.append(store.wait_result("nobody", 0.2)))
    waiter.start()
    waiter.join()
    old = topology.master()
    assert old == topology.first_master

    caplog.set_level(logging.WARNING, logger="beatq.broker")
    topology.kill(old)
    killed = time.monotonic()
    new = wait_for(lambda: (m := topology.master()) != old and m, FAILOVER_BOUND, "a failover")

    def sends() -> bool:
        try:
            store.send([Outgoing("q", f"after-{time.monotonic()}", b"2")])
            return True
        except Exception:  # noqa: BLE001 (unreachable while the sentinels decide)
            return False

    wait_for(sends, FAILOVER_BOUND, "a send to reach the new master")
    assert time.monotonic() - killed < scaled(FAILOVER_BOUND)
    claimed = store.take(Take(["q"], 10, 30.0))
    assert claimed.claims  # the message(s) on the new master
    results: list[object] = []
    waiter = other(target=lambda: results.append(store.wait_result("nobody", 0.2)))
    waiter.start()
    waiter.join()
    assert results == [None]  # that thread's kept connection followed too
    # once per change of master (the sentinels may fail over twice in a row)
    moved = [r.getMessage() for r in caplog.records if "moved" in r.getMessage()]
    assert 1 <= len(moved) <= 2 and len(set(moved)) == len(moved), moved
    assert f"(was 127.0.0.1:{old})" in moved[0]
    assert f":{topology.master()} (was" in moved[-1] or new != topology.master()
    store.disconnect()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Topology]:
    """A master and one replica, no sentinel."""
    folder = tmp_path / "redis"
    folder.mkdir()
    topo = Topology(folder, replicas=1, sentinels=0)
    try:
        topo.start()
        yield topo
    finally:
        topo.stop()


def test_a_dispatch_no_replica_confirmed_is_held_until_one_has_it(pair: Topology) -> None:
    """The beat's dispatch on a master cut off from its replicas (the replica paused):
    the run is settled there, but its message is held unseen by workers and the leader
    steps down (LeaseLost). The next leader, once a replica confirms its lease, sets the
    message free: one message for the run, run once, never seen by a worker before a
    replica had it."""
    url = f"redis://:{MASTER_PASSWORD}@127.0.0.1:{pair.first_master}/0"
    store = connect(
        url,
        {"global_keyprefix": "bqsent-held", "beat_min_replicas": 1, "min_replicas_timeout": 0.3},
    )
    try:
        token = store.acquire_lease("beat", "b1", 30.0)
        assert token is not None
        slot = time.time()
        run = BeatDispatch("e", slot, slot + 60, b"{}", [Outgoing("q", "run-1", b"body")])
        assert store.beat_dispatch_many("beat", "b1", token, [run]) == ["sent"]
        assert store.take(Take(["q"], 10, 30.0)).claims[0].id == "run-1"  # confirmed: free

        replica = pair.servers[pair.replica_ports[0]]
        replica.send_signal(signal.SIGSTOP)
        try:
            run2 = BeatDispatch("e", slot + 60, slot + 120, b"{}", [Outgoing("q", "run-2", b"b")])
            with pytest.raises(LeaseLost, match="reached 0 of the 1 replica"):
                store.beat_dispatch_many("beat", "b1", token, [run2])
            assert store.get_lease("beat") is None  # given up at once
            assert store.beat_entry("e").settled == slot + 60  # settled on this master
            assert not store.take(Take(["q"], 10, 30.0, ahead=5.0)).claims  # held unseen
            with pytest.raises(NotReplicated):  # no replica: no leader
                store.acquire_lease("beat", "b2", 30.0)
        finally:
            replica.send_signal(signal.SIGCONT)
        token2 = wait_for(lambda: _acquire(store, "b2"), 10, "a lease a replica confirms")
        assert token2 > token
        claims = store.take(Take(["q"], 10, 30.0)).claims
        assert [c.id for c in claims] == ["run-2"]  # set free, once
    finally:
        store.purge(["q"])
        store.disconnect()


def _acquire(store: Backend, holder: str) -> int | None:
    try:
        return store.acquire_lease("beat", holder, 30.0)
    except NotReplicated:
        return None
