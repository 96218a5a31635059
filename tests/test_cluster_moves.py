"""redis+cluster:// while slots move between masters (issue 24): calls made after the
map of slots was read, on a slot that moved since (MOVED) or is moving (ASK, TRYAGAIN).
A real 3-master cluster (tests/clusters.py); slots are moved as `redis-cli --cluster
reshard` moves them (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid

import pytest
from redis.crc import key_slot

from beatq.brokers import BeatDispatch, Outgoing, ResultWrite, redis_cluster
from beatq.brokers.cluster import ClusterBackend
from beatq.exceptions import BrokerError
from tests.conftest import wait_for


def another_master(cluster, slot: int) -> int:
    return next(p for p in sorted(cluster.masters()) if p != cluster.slot_owner(slot))


def test_pipelined_reads_follow_a_slot_moved_since_the_map_was_read(cluster, cb) -> None:
    """A result read (two commands in one round trip) and the dead letters (likewise)
    after their slots moved to another master: each command is made again there."""
    task_id = f"t-{uuid.uuid4().hex}"
    cb.store_results([ResultWrite(task_id, b"meta", 60)])
    assert cb.get_result(task_id) == b"meta"  # the map of the result's slot is read
    cb.send([Outgoing("mv-dead", "d1", b"body")])
    claim = cb.claim(["mv-dead"], 1, 30).claims[0]
    cb.dead_letter(claim, "bad")
    assert [d.id for d in cb.dead_letters()] == ["d1"]

    for key in (cb.results._keys(task_id)[1], cb.unit("mv-dead").msgs):
        slot = key_slot(key.encode())
        cluster.move_slot(slot, another_master(cluster, slot))

    assert cb.get_result(task_id) == b"meta"
    assert [d.id for d in cb.dead_letters()] == ["d1"]


def test_the_beats_dispatch_and_events_follow_home_moved_since_the_map_was_read(
    cluster, cb
) -> None:
    """The beat's dispatch (its marks, then the dispatches, in one round trip) and the
    events (XADDs in one round trip) after `{home}` moved: each lands once."""
    token = cb.acquire_lease("beat", "me", 30)
    assert token is not None
    run = BeatDispatch("e", 100.0, 101.0, b"{}", [Outgoing("mv-beat", "m1", b"x")])
    assert cb.beat_dispatch_many("beat", "me", token, [run]) == ["sent"]
    cb.add_events([b"e1"])

    slot = key_slot(cb.keys.prefix.encode())
    cluster.move_slot(slot, another_master(cluster, slot))

    cb.add_events([b"e2", b"e3"])
    run = BeatDispatch("e", 200.0, 201.0, b"{}", [Outgoing("mv-beat", "m2", b"x")])
    assert cb.beat_dispatch_many("beat", "me", token, [run]) == ["sent"]
    assert [e for _, e in cb.recent_events()] == [b"e1", b"e2", b"e3"]
    assert [c.id for c in cb.claim(["mv-beat"], 10, 30).claims] == ["m1", "m2"]


def sockets_to(port: int) -> int:
    """How many TCP sockets of this process are connected to `port` on the loopback."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                mine.add(link[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in mine:
                    count += 1
    return count


def test_a_master_replaced_by_its_replica_keeps_no_connection_of_ours(cluster, cb) -> None:
    """kill -9 of a master that two threads talked to: once its replica took its
    slots, the backend holds no connection to it (no calls, no socket left open)."""
    queue = "mv-gone"
    cb.send([Outgoing(queue, "a", b"x")])
    other = threading.Thread(target=lambda: cb.queue_length(queue))  # a connection of its own
    other.start()
    other.join()
    master = cluster.master_of(cb.unit(queue).msgs)
    replica = cluster.replica_of(master)
    name = f"127.0.0.1:{master}"
    assert name in cb.routes.nodes and sockets_to(master) == 2
    try:
        cluster.kill(master)
        wait_for(lambda: cluster.master_of(cb.unit(queue).msgs) == replica, 20, "promotion")
        wait_for(lambda: _sends(cb, queue), 10, "a send through the new master")
        wait_for(
            lambda: name not in cb.routes.nodes and sockets_to(master) == 0,
            5,
            "the old master's connections closed",
        )
        assert [c.id for c in cb.claim([queue], 10, 30).claims][-1] == "b"
    finally:
        cluster.restart(master)


def _sends(cb: ClusterBackend, queue: str) -> bool:
    try:
        cb.send([Outgoing(queue, "b", b"x")])
    except BrokerError:
        return False
    return True


def test_calls_on_a_slot_being_migrated_follow_ask_and_wait_for_its_end(
    cluster, cb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result's slot mid-migration, its keys on the target already: a read follows ASK
    there; a write (a function) waits until the migration ends, then lands once; a
    migration left half done fails the call after MIGRATING_FOR with an error that says
    so, instead of hanging or running the function on half the keys."""
    task_id = f"t-{uuid.uuid4().hex}"
    cb.store_results([ResultWrite(task_id, b"first", 60)])
    assert cb.get_result(task_id) == b"first"
    slot = key_slot(cb.results._keys(task_id)[1].encode())
    to = another_master(cluster, slot)
    source = cluster.begin_migration(slot, to)
    try:
        while cluster.migrate_keys(slot, source, to):
            pass
        assert cb.get_result(task_id) == b"first"  # on the target, through ASK

        monkeypatch.setattr(redis_cluster, "MIGRATING_FOR", 0.5)
        with pytest.raises(BrokerError, match=r"in a migration for over 0.5 s.*--cluster fix"):
            cb.store_results([ResultWrite(task_id, b"second", 60)])
        monkeypatch.setattr(redis_cluster, "MIGRATING_FOR", 30.0)

        done: dict[str, float] = {}

        def store() -> None:
            cb.store_results([ResultWrite(task_id, b"third", 60)])
            done["at"] = time.monotonic()

        writer = threading.Thread(target=store)
        writer.start()
        time.sleep(0.5)
        assert not done, "a function ran on a slot being migrated"
        ended_at = time.monotonic()
    finally:
        cluster.end_migration(slot, source, to)
    writer.join(10)
    assert done["at"] >= ended_at
    assert cb.get_result(task_id) == b"third"


def test_of_a_round_trip_only_the_commands_refused_are_made_again(cluster, cb) -> None:
    """A slot mid-migration, one key still on the source, one on the target: of two
    INCRs in one round trip, the first runs on the source, the second is refused (ASK)
    and made again on the target alone; neither runs twice."""
    here, there = f"{cb.keys.prefix}:n:here", f"{cb.keys.prefix}:n:there"
    cb.routes.pipeline(here, [("SET", here, 1), ("SET", there, 1)])
    slot = key_slot(here.encode())
    to = another_master(cluster, slot)
    source = cluster.begin_migration(slot, to)
    try:
        while cluster.migrate_keys(slot, source, to, unless=here.encode()):
            pass
        assert cb.routes.pipeline(here, [("INCR", here), ("INCR", there)]) == [2, 2]
    finally:
        while cluster.migrate_keys(slot, source, to):
            pass
        cluster.end_migration(slot, source, to)
    assert cb.routes.pipeline(here, [("GET", here), ("GET", there)]) == [b"2", b"2"]
