"""redis+cluster:// with one queue's slot held mid-migration (issue 24): the other
queues, on other shards, go on. A worker consuming several queues claims the others at
once and the migrating one's tasks wait, then run once each when the migration ends; the
beat's runs to the other queues go at their instants and its lease is renewed, the
migrating queue's waiting in its outbox until then.

A real 3-master cluster (tests/clusters.py); the migration is begun as `redis-cli
--cluster reshard` begins it (SETSLOT IMPORTING/MIGRATING), a key is moved (the slot's
keys are split between two masters), and it is finished at the end of the test.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from tests.conftest import scaled, wait_for
from tests.proj import journal
from tests.test_beat_e2e import (  # noqa: F401 (start_beat: a fixture)
    assert_each_slot_once,
    leader_pid,
    start_beat,
    tick,
    write_schedule,
)
from tests.test_cluster_failover import dispatched

pytestmark = pytest.mark.backends("cluster")


def apart(app, cluster, avoid: int = 0) -> tuple[str, str]:
    """Two queue names whose slots are on different masters, neither on master `avoid`."""
    found: dict[int, str] = {}
    for i in range(300):
        name = f"mg{i}"
        master = cluster.master_of(app.broker.unit(name).msgs)
        if master != avoid:
            found.setdefault(master, name)
        if len(found) == 2:
            first, second = found.values()
            return first, second
    raise AssertionError("no two queue names on different masters")


@contextlib.contextmanager
def mid_migration(cluster, slot: int, first: bytes) -> Iterator[None]:
    """`slot` being migrated to another master for the block: the key `first` moved, the
    others not; the migration finished after."""
    to = next(p for p in sorted(cluster.masters()) if p != cluster.slot_owner(slot))
    source = cluster.begin_migration(slot, to)
    try:
        assert cluster.migrate_keys(slot, source, to, 1, first=first) == 1
        yield
    finally:
        while cluster.migrate_keys(slot, source, to):
            pass
        cluster.end_migration(slot, source, to)


def ran() -> Counter[str]:
    return Counter(tag for tag, _ in journal("cl"))


def troubles(log: str) -> list[str]:
    return [line for line in log.splitlines() if "Traceback" in line or " ERROR/" in line]


def test_a_worker_claims_its_other_queue_while_the_first_ones_slot_migrates(
    app, cluster, start_worker
) -> None:
    from tests.proj.tasks import cl_stamp

    a, b = apart(app, cluster)
    waiting = {f"{a}:{i}" for i in range(3)}
    for tag in sorted(waiting):
        cl_stamp.apply_async((tag,), queue=a)
    unit = app.broker.unit(a)
    late: list[float] = []
    with mid_migration(cluster, key_slot(unit.msgs.encode()), first=unit.msgs.encode()):
        # a first in urgency order: each claim meets its slot before b's
        worker = start_worker("-P", "threads", "-c", "4", "-Q", f"{a},{b}")
        for i in range(5):
            tag = f"{b}:{i}"
            sent_at = time.monotonic()
            cl_stamp.apply_async((tag,), queue=b)
            wait_for(lambda tag=tag: tag in ran(), scaled(2.0), f"{tag} to run")
            late.append(time.monotonic() - sent_at)
        assert not waiting & set(ran()), "a's tasks ran with its slot mid-migration"
    wait_for(lambda: waiting <= set(ran()), scaled(10.0), f"{a}'s tasks after the migration")
    time.sleep(0.3)  # a run twice would show by now
    assert all(n == 1 for n in ran().values()), ran()
    assert len(ran()) == 8
    assert max(late) < scaled(2.0), late
    assert worker.process.poll() is None, worker.log()
    assert not troubles(worker.log()), worker.log()


def test_the_beats_runs_to_other_queues_go_on_while_one_queues_slot_migrates(
    app,
    cluster,
    tmp_path,
    start_beat,  # noqa: F811 (the fixture imported above)
) -> None:
    home = cluster.master_of(app.broker.keys.lease("beat"))
    hit, fine = apart(app, cluster, avoid=home)
    entries = {
        "hit": {**tick(catchup="all"), "options": {"queue": hit}},
        "fine": {**tick(catchup="all"), "options": {"queue": fine}},
    }
    beat = start_beat(write_schedule(tmp_path / "s.yaml", entries), ttl=3.0)
    wait_for(lambda: len(dispatched(app, hit)) >= 2, 10, "two runs to the queue to migrate")
    leader = leader_pid(app)
    unit = app.broker.unit(hit)
    with mid_migration(cluster, key_slot(unit.msgs.encode()), first=unit.msgs.encode()):
        began = time.time()
        last = max(slot for slot, _ in dispatched(app, fine))
        wait_for(
            lambda: max(s for s, _ in dispatched(app, fine)) >= last + 4,
            scaled(8.0),
            f"runs to {fine} while {hit}'s slot migrates",
        )
        ended = time.time()
    held = max(slot for slot, _ in dispatched(app, fine))
    wait_for(
        lambda: max(s for s, _ in dispatched(app, hit)) >= held,
        scaled(5.0),
        f"{hit}'s runs sent after the migration",
    )
    assert beat.process.poll() is None, beat.log()
    assert leader_pid(app) == leader, beat.log()  # the lease was renewed throughout
    assert not troubles(beat.log()), beat.log()
    # the other queue's runs went at their instants (a second apart) meanwhile
    sent = [at for _, at in dispatched(app, fine) if began - 1 <= at <= ended]
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert len(sent) >= 4 and max(gaps) < 1.5, gaps
    for queue in (hit, fine):  # catchup all: every slot once, none missed
        assert_each_slot_once([slot for slot, _ in dispatched(app, queue)], 4)
