"""Redis behind Sentinel (sentinel://, issue 24): the master found through the sentinels
and followed across a failover, the beat's guarantees kept across it, WAIT-backed sends.

The topology (tests/sentinels.py) is real: a master, two replicas and three sentinels on
free loopback ports, `kill -9` of the master, sentinels that fail over in a second or two.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from beatq import Beatq
from beatq.brokers import Backend, BeatDispatch, Outgoing, connect
from beatq.brokers.redis import RedisBackend
from beatq.brokers.roles import Take
from beatq.exceptions import (
    BeatqError,
    BrokerAccessDenied,
    ConfigurationError,
    LeaseLost,
    NotReplicated,
)
from tests.conftest import ROOT, WorkerProcess, logged_at, point_app, scaled, wait_for
from tests.journal import journal
from tests.sentinels import DOWN_AFTER_MS, MASTER_PASSWORD, SENTINEL_PASSWORD, Topology
from tests.test_beat_e2e import slots, tick

SENTINEL_OPTIONS = {"sentinel_kwargs": {"password": SENTINEL_PASSWORD}}
# the sentinels' failover time: down-after, then their vote and the promotion (a second
# or two), twice when the first attempt fails; +5 s is the promise to follow it
FAILOVER_BOUND = DOWN_AFTER_MS / 1000 + 4.0 + 5.0


@pytest.fixture(params=[False], ids=["plain"])
def topology(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Topology]:
    folder = tmp_path / "redis"
    folder.mkdir()
    if request.param and shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: the test makes its certificates with it")
    topo = Topology(folder, tls=request.param)
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
        ("rediscluster://127.0.0.1:7000", r"names redis\+cluster://"),
        ("cluster://127.0.0.1:7000", r"redis\+cluster://host1:7000"),
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
def test_each_password_where_it_belongs(topology: Topology) -> None:
    """The sentinels' password from sentinel_kwargs, the master's from the URL: a missing
    or wrong one is one line saying which and where to give it."""
    cases = [
        ({}, topology.url(), "sentinel 127.0.0.1:\\d+ asks for a password.*sentinel_kwargs"),
        ({"sentinel_kwargs": {"password": "nope"}}, topology.url(), "refused the password"),
        (SENTINEL_OPTIONS, topology.url(password="nope"), "check the user name and password"),
    ]
    for options, url, says in cases:
        store = connect(url, options)
        with pytest.raises(BrokerAccessDenied, match=says) as caught:
            store.ping()
        assert "nope" not in str(caught.value) and "HELLO" not in str(caught.value)
        store.disconnect()
    store = backend(topology.url())
    store.ping()
    store.disconnect()


@pytest.mark.parametrize("topology", [False, True], ids=["plain", "tls"], indirect=True)
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
        {"global_keyprefix": "bqsent-held", "beat_min_replicas": 1, "min_replicas_timeout": 1.0},
    )
    try:
        token = wait_for(lambda: _acquire(store, "b1"), 10, "a lease a replica confirms")
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
        # a trigger's run (app.schedules) is held and set free the same way
        assert store.schedule_request("req-1", b"{}", 60.0)
        out = [Outgoing("q", "trig-1", b"t")]
        assert store.schedule_run("beat", "b2", token2, "req-1", slot, True, out) == "sent"
        assert [c.id for c in store.take(Take(["q"], 10, 30.0)).claims] == ["trig-1"]
    finally:
        store.purge(["q"])
        store.disconnect()


def _acquire(store: Backend, holder: str) -> int | None:
    try:
        return store.acquire_lease("beat", holder, 30.0)
    except NotReplicated:
        return None


# -- a worker, two beats and two clients through a kill -9 of the master -------------------------
class Client:
    """Sends `tests.proj.tasks.sent` in a thread until stopped; keeps the tags whose send
    returned and counts the sends that raised."""

    def __init__(self, app: Beatq, name: str) -> None:
        self.app, self.name = app, name
        self.returned: list[tuple[float, str]] = []  # (when, tag)
        self.raised: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            i += 1
            tag = f"{self.name}-{i}"
            try:
                self.app.send_task("tests.proj.tasks.sent", args=[tag])
                self.returned.append((time.time(), tag))
            except BeatqError as exc:
                self.raised.append(f"{tag}: {exc}")
                self.stopping.wait(0.05)
            self.stopping.wait(0.02)


SENT = re.compile(r"beat: sent tests\.proj\.tasks\.beat_run for entry '(\w+)'.*, id ([\w-]+)")


def test_failover_under_load_keeps_every_promise(
    topology: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kill -9` of the master under a worker, two beats and two clients (one with
    min_replicas=1, one without): the new master is followed within the sentinels'
    failover time + 5 s, no process crashes, every send that returned with min_replicas is
    run (without: the loss is counted, and bounded by what was sent just before the kill),
    each (entry, slot) is dispatched once and run once, and every run a beat logged as
    sent is one a replica had: it runs (none is lost with the old master)."""
    prefix = f"bqfail-{uuid.uuid4().hex[:6]}"
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    transport = {**SENTINEL_OPTIONS, "min_replicas": 1}
    env = {
        **os.environ,
        "BEATQ_BROKER_URL": topology.url(),
        "BEATQ_TEST_PREFIX": prefix,
        "BEATQ_TEST_JOURNAL": str(journal_dir),
        "BEATQ_TEST_TRANSPORT": json.dumps(transport),
        "PYTHONPATH": str(ROOT),
    }
    monkeypatch.setenv("BEATQ_TEST_JOURNAL", str(journal_dir))  # read here too
    schedule = tmp_path / "beat.yaml"
    entries = {f"e{i}": {"task": "tests.proj.tasks.beat_run", "every": "1s"} for i in range(3)}
    schedule.write_text(yaml.safe_dump({"schedules": entries}))
    processes: list[WorkerProcess] = []

    def start(name: str, *argv: str) -> WorkerProcess:
        process = WorkerProcess(["-A", "tests.proj", *argv], env, tmp_path / f"{name}.log")
        processes.append(process)
        return process

    app = point_app(topology.url(), prefix)
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, **transport}
    plain = Beatq("plain")  # sends without min_replicas
    options = {**SENTINEL_OPTIONS, "global_keyprefix": prefix}
    plain.conf.update(broker_url=topology.url(), broker_transport_options=options)
    clients = [Client(app, "waited"), Client(plain, "plain")]
    try:
        worker = start("worker", "worker", "-n", "w-fail", "-c", "4", "-l", "info")
        beats = [
            start(f"beat{i}", "beat", "-s", str(schedule), "--lease-ttl", "3", "-l", "info")
            for i in range(2)
        ]
        wait_for(lambda: len(journal("beat_runs")) >= 3, 60, "the beat's first runs")
        for client in clients:
            client.thread.start()
        wait_for(lambda: len(journal("sent")) >= 20, 30, "the clients' first tasks")

        old = topology.master()
        killed_at = time.time()
        topology.kill(old)
        new = wait_for(lambda: (m := topology.master()) != old and m, FAILOVER_BOUND, "failover")
        switched_at = time.time()
        # followed within failover + 5 s: a client's send and a beat's run, both run
        bound = switched_at + scaled(5.0)
        wait_for(
            lambda: any(
                when > switched_at and tag in journal("sent")
                for when, tag in clients[0].returned[-20:]
            ),
            bound - time.time(),
            f"a send after the switch ({killed_at:.3f} killed, {switched_at:.3f} switched)",
        )
        wait_for(
            lambda: any(r["slot"] > switched_at for r in journal("beat_runs")),
            bound - time.time() + 1.0,  # the next whole-second slot
            f"a beat run after the switch ({killed_at:.3f} killed, {switched_at:.3f} switched)",
        )
        # two more seconds of runs and sends on the new master (or a second switch)
        later = switched_at + 2.0
        wait_for(lambda: any(r["slot"] >= later for r in journal("beat_runs")), 10, "load")
        for client in clients:
            client.stopping.set()
            client.thread.join()
        stopped_at = time.time()
        final_master = topology.master()

        waited = {tag for _, tag in clients[0].returned}
        wait_for(lambda: waited <= set(journal("sent")), 30, "every waited send to run")
        # no process crashed
        for process in [worker, *beats]:
            assert process.process.poll() is None, process.log()[-3000:]
    finally:
        for client in clients:
            client.stopping.set()
        for process in processes:
            process.stop()
        app.close()
        plain.close()

    ran = journal("sent")
    assert len(ran) == len(set(ran)), "a client's task ran twice"
    # without min_replicas: what was lost is counted, and only what was sent just before
    lost = [(when, tag) for when, tag in clients[1].returned if tag not in set(ran)]
    # a second failover in a row (the first promoted replica demoted again) loses what
    # was sent to that one too
    last_loss = killed_at + 0.5 if final_master == new else stopped_at
    # how far back: the replica's lag, a moment on an idle machine, seconds on a loaded one
    # (two suites' processes on two cores lost a send made 1.2 s before the kill)
    lag = scaled(3.0)
    assert all(killed_at - lag <= when <= last_loss for when, _ in lost), (killed_at, lost)
    print(
        f"plain sends lost: {len(lost)} of {len(clients[1].returned)}; "
        f"raised: waited {len(clients[0].raised)}, plain {len(clients[1].raised)}; "
        f"failover {switched_at - killed_at:.1f}s to master {new}"
    )

    # each (entry, slot) dispatched once and run once
    runs = [r for r in journal("beat_runs") if r["slot"] < stopped_at - 1.0]
    per_slot = Counter((r["entry"], r["slot"]) for r in runs)
    doubled = {k: n for k, n in per_slot.items() if n > 1}
    assert not doubled, doubled
    # every run a beat logged as sent (confirmed by a replica) ran: none was lost
    sent_ids: dict[str, int] = {}
    for i, beat in enumerate(beats):
        for line in beat.log_path.read_text(errors="replace").splitlines():
            found = SENT.search(line)
            if found and logged_at(line) < stopped_at - 2.0:
                assert found.group(2) not in sent_ids, f"two beats sent {found.group(2)}"
                sent_ids[found.group(2)] = i
    assert set(sent_ids) <= {r["id"] for r in journal("beat_runs")}
    # the old leader dispatches nothing once another beat leads: after the kill, every
    # run is sent by the beat that took the lead last
    moments = []
    for i, beat in enumerate(beats):
        for line in beat.log_path.read_text(errors="replace").splitlines():
            if "is the leader now" in line:
                moments.append((logged_at(line), 0, i))
            elif SENT.search(line):
                moments.append((logged_at(line), 1, i))
    leader = None
    for when, kind, i in sorted(moments):
        if kind == 0:
            leader = i
        elif when > killed_at:
            assert i == leader, f"beat{i} sent a run at {when} while beat{leader} led"


# -- a leader whose broker fails mid-dispatch ---------------------------------------------------
def test_a_leader_whose_broker_failed_sends_again_once_it_is_back(
    pair: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The beat's dispatch times out (the server paused with CLIENT PAUSE past the beat's
    socket timeout) while its lease lives on: once the server answers again the leader
    plans from the broker's state and keeps sending every second, each slot once (the runs
    taken off its heap for the failed dispatch were lost until it lost the lease)."""
    url = f"redis://:{MASTER_PASSWORD}@127.0.0.1:{pair.first_master}/0"
    prefix = f"bqpause-{uuid.uuid4().hex[:6]}"
    schedule = tmp_path / "beat.yaml"
    schedule.write_text(yaml.safe_dump({"schedules": {"t": tick()}}))
    transport = {"socket_timeout": 0.5}
    env = {
        **os.environ,
        "BEATQ_BROKER_URL": url,
        "BEATQ_TEST_PREFIX": prefix,
        "BEATQ_TEST_TRANSPORT": json.dumps(transport),
        "BEATQ_TEST_JOURNAL": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    monkeypatch.setenv("BEATQ_TEST_JOURNAL", str(tmp_path))
    app = point_app(url, prefix)
    argv = ["-A", "tests.proj", "beat", "-s", str(schedule), "--lease-ttl", "10", "-l", "info"]
    beat = WorkerProcess(argv, env, tmp_path / "beat.log")
    try:
        wait_for(lambda: len(slots(app, "t")) >= 2, 60, "the beat's first runs")
        with pair.master_client() as client:
            client.execute_command("CLIENT", "PAUSE", 2500, "ALL")
        paused_until = time.time() + 2.5
        wait_for(lambda: "broker unreachable" in beat.log(), 10, "the beat to meet the pause")
        wait_for(lambda: any(s >= paused_until + 1 for s in slots(app, "t")), 15, "runs after it")
        assert beat.process.poll() is None, beat.log()
        assert "lost the leadership" not in beat.log()  # the lease lived on
        found = slots(app, "t")
        assert len(found) == len(set(found)), found  # each slot once
    finally:
        beat.stop()
        app.close()


@pytest.mark.backends("redis")
def test_a_send_no_replica_confirmed_is_not_sent_again(app, start_worker) -> None:
    """NotReplicated comes after the master took the message: publish's retry policy must
    not send it again, or a worker that took the first copy runs it twice (it ran 4 times)."""
    from tests.proj.tasks import sent

    start_worker("-P", "threads", "-c", "1")  # its own finishing steps do not wait
    transport = {"min_replicas": 1, "min_replicas_timeout": 0.2, "beat_min_replicas": 0}
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, **transport}
    app.close()  # the next send connects with the options
    for tag in ("once", "after"):
        with pytest.raises(NotReplicated):
            sent.apply_async((tag,))
    # one queue, one slot: a copy sent again before "after" would have run before it
    wait_for(lambda: "after" in journal("sent"), 10, "the second send to run")
    assert journal("sent").count("once") == 1
