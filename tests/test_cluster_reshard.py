"""redis+cluster:// resharded live (issue 24): a busy queue's slot, and the beat's own
slot ({home}), migrated to another master under a running worker, a client sending and
two beats. Slots are moved as `redis-cli --cluster reshard` moves them (SETSLOT
IMPORTING/MIGRATING, MIGRATE a few keys at a time, SETSLOT NODE), here slowly, so the
processes keep calling while the slot's keys are split between the two masters.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from redis.crc import key_slot

from tests.conftest import wait_for
from tests.proj import journal
from tests.test_beat_e2e import (  # noqa: F401 (start_beat: a fixture)
    assert_each_slot_once,
    leader_pid,
    slots,
    start_beat,
    tick,
    write_schedule,
)

pytestmark = pytest.mark.backends("cluster")


def migrate_slowly(
    cluster, slot: int, to: int, batch: int, pause: float, first: bytes = b"", mine: bytes = b""
) -> tuple[int, int]:
    """Move `slot` to master `to`: the keys not under prefix `mine` (other tests' in a
    shared slot, `{home}`) at once, then `batch` keys at a time (those whose name holds
    `first` first) with `pause` seconds between; (the port of its old master, how many
    keys moved)."""
    source = cluster.begin_migration(slot, to)
    if mine:
        while cluster.migrate_keys(slot, source, to, 1000, unless=mine):
            pass
    moved = 0
    while count := cluster.migrate_keys(slot, source, to, batch, first):
        moved += count
        time.sleep(pause)
    cluster.end_migration(slot, source, to)
    return source, moved


def another_master(cluster, slot: int) -> int:
    return next(p for p in sorted(cluster.masters()) if p != cluster.slot_owner(slot))


def troubles(log: str) -> list[str]:
    """The lines of a process's log that tell of trouble: a migration is no outage."""
    return [line for line in log.splitlines() if "Traceback" in line or " ERROR/" in line]


def ran() -> list[str]:
    return [tag for tag, _ in journal("cl")]


def test_a_busy_queues_slot_moves_under_a_worker_and_a_client(app, cluster, start_worker):
    from tests.proj.tasks import cl_stamp

    queue = "rs-busy"
    worker = start_worker("-P", "threads", "-c", "4", "-Q", queue)
    stop = threading.Event()
    sent: list[str] = []
    refused: list[str] = []

    def send(n: int) -> None:
        i = 0
        while not stop.is_set():
            tag = f"{queue}:{n}:{i}"
            # a third of them due up to a second later: the queue's slot holds several
            # keys (the messages, the delayed set, the queue's list, the claims)
            countdown = (i % 10) / 10 if i % 3 == 0 else None
            try:
                cl_stamp.apply_async((tag,), queue=queue, countdown=countdown)
                sent.append(tag)
            except Exception as exc:  # noqa: BLE001 (any refusal fails the test)
                refused.append(str(exc))
            i += 1

    senders = [threading.Thread(target=send, args=(n,), daemon=True) for n in range(3)]
    for sender in senders:
        sender.start()
    try:
        wait_for(lambda: len(ran()) >= 50, 10, "tasks flowing")
        slot = key_slot(app.broker.unit(queue).msgs.encode())
        to = another_master(cluster, slot)
        # the queue's list first: a send or a claim made meanwhile finds it gone from
        # the source while the messages are still there
        first = app.broker.unit(queue).queue(queue).encode()
        source, moved = migrate_slowly(cluster, slot, to, batch=1, pause=0.3, first=first)
        ended = len(sent)
        wait_for(lambda: len(sent) > ended + 50, 10, "sends after the migration")
    finally:
        stop.set()
        for sender in senders:
            sender.join(10)
    assert not refused, refused
    assert moved >= 2, "the slot's keys were split between two masters for a while"
    wait_for(lambda: set(sent) <= set(ran()), 15, "every task sent to run")
    twice = [tag for tag, n in Counter(ran()).items() if n > 1]
    assert not twice, f"tasks run twice: {twice}"
    assert set(ran()) == set(sent)
    assert worker.process.poll() is None, worker.log()
    assert not troubles(worker.log()), worker.log()
    (shard,) = [s for s in app.broker.topology().shards if queue in s.queues]
    assert shard.master.address == f"127.0.0.1:{to}" != f"127.0.0.1:{source}"


def test_the_beats_slot_moves_under_two_running_beats(
    app,
    cluster,
    tmp_path,
    start_beat,  # noqa: F811 (the fixture imported above)
):
    path = write_schedule(tmp_path / "s.yaml", {"all": tick(catchup="all")})
    beats = [start_beat(path, ttl=3.0), start_beat(path, ttl=3.0)]
    wait_for(lambda: len(slots(app, "all")) >= 2, 10, "two runs")
    leader = wait_for(lambda: leader_pid(app), 10, "a leader")
    slot = key_slot(app.broker.keys.prefix.encode())
    # a key at a time, the lease first, 50 ms apart: the keys split for well under the
    # lease's 3 s, which a leader renews every second
    lease = app.broker.keys.lease("beat").encode()
    to = another_master(cluster, slot)
    mine = f"{app.broker.base}:".encode()
    _, moved = migrate_slowly(cluster, slot, to, batch=1, pause=0.05, first=lease, mine=mine)
    assert moved > 0
    last = max(slots(app, "all"))
    wait_for(lambda: max(slots(app, "all")) >= last + 2, 10, "runs after the migration")
    assert leader_pid(app) == leader
    for beat in beats:
        assert beat.process.poll() is None, beat.log()
        assert not troubles(beat.log()), beat.log()
    assert_each_slot_once(slots(app, "all"), 4)  # catchup all: no slot missed, none twice
