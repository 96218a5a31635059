"""redis+cluster:// (issue 24): queues spread over the shards of a real 3-master cluster
(tests/clusters.py), the URL's refusals, and waits across queues in different slots.

The cb contract suite runs on the cluster too (tests/contract, kind "cluster").
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import uuid
import weakref

import pytest
import redis

from beatq.brokers import Outgoing, connect
from beatq.brokers.cluster import ClusterBackend
from beatq.exceptions import BrokerAccessDenied, BrokerError, ConfigurationError
from tests.conftest import scaled, wait_for
from tests.contract.conftest import in_thread


@pytest.mark.parametrize(
    ("url", "options", "says"),
    [
        ("redis+cluster://127.0.0.1:7000/1", {}, "database 0 only"),
        ("redis+cluster://127.0.0.1:x/", {}, "not a node's host:port"),
        ("redis+cluster://127.0.0.1:7000/?sockt_timeout=1", {}, "socket_timeout"),
        ("redis+cluster://127.0.0.1:7000/", {"global_keyprefix": "a{b}"}, "without braces"),
        ("redis+cluster://127.0.0.1:7000/", {"beat_min_replicas": -1}, "beat_min_replicas=-1"),
        ("redis+cluster://127.0.0.1:7000/", {"min_replica": 1}, "did you mean 'min_replicas'"),
        ("redis-cluster://127.0.0.1:7000/", {}, r"beatq names redis\+cluster://"),
    ],
)
def test_bad_cluster_urls_and_options_are_refused(url: str, options: dict, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        connect(url, options)


def test_queues_land_on_different_shards(cluster, cb: ClusterBackend) -> None:
    queues = [f"q{i}" for i in range(12)]
    cb.send([Outgoing(q, f"id-{q}", b"body") for q in queues])
    masters = {}
    for q in queues:
        key = cb.unit(q).msgs
        port = cluster.master_of(key)
        # the message is on that master, under its queue's hash tag
        with redis.Redis(port=port) as node:
            assert node.hget(key, f"id-{q}") is not None
            slot = node.execute_command("CLUSTER", "KEYSLOT", key)
            assert slot == node.execute_command("CLUSTER", "KEYSLOT", cb.unit(q).queue(q))
        masters[q] = port
    assert len(set(masters.values())) == 3, masters
    assert cb.queue_names() == sorted(queues)
    taken = cb.claim(queues, 100, 30).claims
    assert [c.queue for c in taken] == queues  # queue by queue, in the order asked


def test_a_wait_over_queues_on_different_shards_wakes_on_any(cluster, cb: ClusterBackend) -> None:
    queues = ["wa", "wb", "wc"]
    assert len({cluster.master_of(cb.unit(q).msgs) for q in queues}) > 1
    for late in queues:
        cb.claim(queues, 100, 30)  # leaves no wake-up token behind
        while cb.wait(queues, 0.01):  # tokens of the sends before
            pass
        thread, done = in_thread(lambda: cb.wait_claim(queues, 4.0, 10, 30))
        time.sleep(0.2)
        sent_at = time.monotonic()
        cb.send([Outgoing(late, f"m-{late}", b"x")])
        thread.join(scaled(5))
        assert [c.id for c in done["value"].claims] == [f"m-{late}"]
        assert done["at"] - sent_at < scaled(1.0), "woken by the send, not the timeout"


def test_a_publish_that_meets_a_shard_out_of_reach_fails_to_its_caller(
    cb: ClusterBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finish without a token that sends (a client's publish of a group with its
    results) is not left to the background retries, which would send again what reached
    the healthy shard each time and hide the failure: it raises, and nothing is pending."""
    sent: list[str] = []
    real_send = cb.send

    def send_or_fail(messages, events=()):
        real_send([m for m in messages if m.queue == "up"])
        sent.extend(m.id for m in messages if m.queue == "up")
        if any(m.queue == "down" for m in messages):
            raise BrokerError("the shard of queue 'down' is out of reach")

    monkeypatch.setattr(cb, "send", send_or_fail)
    with pytest.raises(BrokerError, match="out of reach"):
        cb.finish(send=[Outgoing("up", "m-up", b"body"), Outgoing("down", "m-down", b"body")])
    assert sent == ["m-up"]
    assert cb.later.pending == [] and cb.later.thread is None  # no retry left behind
    assert cb.queue_length("up") == 1


def test_interrupt_wait_ends_a_wait_over_several_queues(cb: ClusterBackend) -> None:
    queues = ["ia", "ib", "ic"]
    cb.wait(queues, 0.01)
    thread, done = in_thread(lambda: cb.wait(queues, 4.0))
    time.sleep(0.2)
    asked_at = time.monotonic()
    assert cb.interrupt_wait()
    thread.join(scaled(5))
    assert done["value"] is True
    assert done["at"] - asked_at < scaled(1.0)


def test_a_run_dispatched_again_after_its_settlement_was_lost_is_not_sent_again(
    cb: ClusterBackend,
) -> None:
    """What a failed {home} master can lose: a run's settlement, its message sent already
    (the outbox sends each run under the mark of its entry and slot, in its queue's slot)."""
    from beatq.brokers import BeatDispatch

    token = cb.acquire_lease("beat", "me", 30)
    assert token is not None

    def dispatch(message_id: str) -> str:
        run = BeatDispatch("e", 100.0, 101.0, b"{}", [Outgoing("bq", message_id, b"x")])
        return cb.beat_dispatch("beat", "me", token, run)

    assert dispatch("m1") == "sent"
    assert dispatch("m2") == "done"  # settled: nothing sent
    home = cb.client.get_node_from_key(cb.keys.prefix).redis_connection
    assert cb.client.zcard(cb.keys.beat_held) == 0, "the outbox is empty once sent"
    assert list(home.scan_iter(match=f"{cb.keys.prefix}:beat:mark:*")) == []
    cb.client.hdel(cb.keys.beat_settled, "e")  # the settlement lost with a failed master
    assert dispatch("m3") == "sent"  # settled again, and its message not sent twice
    assert [c.id for c in cb.claim(["bq"], 10, 30).claims] == ["m1"]


def test_a_skip_entry_whose_queue_is_out_of_reach_holds_up_no_other_run(
    cb: ClusterBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """overlap: skip asks the entry's queue whether its last run is still there; when that
    shard cannot answer, the run counts as overlapping (skipped, said in the log) and the
    batch's other runs are dispatched: one shard in a failover stops no other entry."""
    from beatq.brokers import BeatDispatch

    token = cb.acquire_lease("beat", "me", 30)
    assert token is not None
    down = cb.unit("down").msgs
    real = cb.routes.command

    def command(key, *args, **kwargs):
        if key == down:
            raise redis.ConnectionError("Connection refused")
        return real(key, *args, **kwargs)

    monkeypatch.setattr(cb.routes, "command", command)
    runs = [
        BeatDispatch("skip", 100.0, 101.0, b"{}", [Outgoing("down", "s1", b"x")], "s0"),
        BeatDispatch("other", 100.0, 101.0, b"{}", [Outgoing("up", "o1", b"x")]),
    ]
    assert cb.beat_dispatch_many("beat", "me", token, runs) == ["busy", "sent"]
    assert [c.id for c in cb.claim(["up"], 10, 30).claims] == ["o1"]


def test_rediss_cluster_speaks_tls_to_every_node(tmp_path) -> None:
    from tests.clusters import Cluster

    cluster = Cluster(tmp_path, tls=True)
    cluster.start()
    try:
        b = connect(cluster.url(), {"global_keyprefix": "tls"})
        try:
            queues = [f"t{i}" for i in range(6)]
            b.send([Outgoing(q, f"id-{q}", b"body") for q in queues])
            assert len({cluster.master_of(b.unit(q).msgs) for q in queues}) > 1
            assert [c.id for c in b.claim(queues, 10, 30).claims] == [f"id-{q}" for q in queues]
        finally:
            b.close()
        bad = cluster.url().partition("?")[0]  # no CA named: the certificate is not trusted
        with pytest.raises(BrokerAccessDenied, match="ssl_ca_certs"):
            connect(bad).ping()
    finally:
        cluster.stop()


def test_a_new_leader_leads_at_once_while_a_queues_shard_refuses_the_outbox(
    cluster, cb: ClusterBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """A run left in the outbox for a queue whose shard refuses writes (full: maxmemory)
    holds up no leader: the next one takes the lease and keeps it (its acquisition
    stands), the outbox waits, said once, and goes at a renewal once the shard takes it."""
    from beatq.brokers import BeatDispatch

    home = cluster.master_of(cb.keys.prefix)
    queue = next(
        f"full{i}" for i in range(200) if cluster.master_of(cb.unit(f"full{i}").msgs) != home
    )
    cb.send([Outgoing(queue, "warm", b"x")])  # its name noted, its unit made
    token = cb.acquire_lease("beat", "one", 30)
    assert token is not None
    node = cluster.client(cluster.master_of(cb.unit(queue).msgs))
    node.config_set("maxmemory", 1)  # noeviction: every write refused (OOM)
    try:
        run = BeatDispatch("e", 100.0, 101.0, b"{}", [Outgoing(queue, "m1", b"x")])
        assert cb.beat_dispatch("beat", "one", token, run) == "sent"  # settled, in the outbox
        assert cb.client.zcard(cb.keys.beat_held) == 1
        cb.release_lease("beat", "one", token)
        token2 = cb.acquire_lease("beat", "two", 30)
        assert token2 == token + 1
        assert cb.get_lease("beat").holder == "two"
        assert cb.renew_lease("beat", "two", token2, 30)  # still refused: waits, said once
        assert caplog.text.count("wait in its outbox") == 1, caplog.text
        assert cb.client.zcard(cb.keys.beat_held) == 1
    finally:
        node.config_set("maxmemory", 0)
        node.close()
    assert cb.renew_lease("beat", "two", token2, 30)
    assert cb.client.zcard(cb.keys.beat_held) == 0
    assert [c.id for c in cb.claim([queue], 10, 30).claims] == ["warm", "m1"]


def test_a_retry_sent_to_another_queue_keeps_its_claim_live_until_acknowledged(
    cb: ClusterBackend,
) -> None:
    """A finish whose retry goes to another queue (another slot) asks first whether the
    claim is stale, and keeps it live from then to its acknowledgement: the retry is not
    sent for a claim that goes stale between the two (and runs twice)."""
    cb.send([Outgoing("pa", "m", b"x")])
    (claim,) = cb.claim(["pa"], 1, 0.3).claims
    assert cb._stale_claims({"pa": [claim]}) == frozenset()  # the finish's first step
    time.sleep(0.5)  # past the claim's visibility timeout
    assert cb.claim(["pa"], 10, 30).claims == [], "kept live: not delivered again"
    retry = Outgoing("pb", "m", b"retry")
    assert cb.finish(ack=[claim], send=[retry], token=uuid.uuid4().hex) == frozenset()
    assert [c.id for c in cb.claim(["pb"], 10, 30).claims] == ["m"]
    assert cb.queue_length("pa") == 0


def test_backends_made_and_closed_leave_no_thread_nor_fork_hook_behind(
    cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that makes and drops many cluster backends does not grow: closing one
    ends its threads (finishes made again later, waits over several queues) and leaves
    no fork hook (os.register_at_fork has no undo) keeping it alive."""
    registered: list[dict] = []
    real = os.register_at_fork

    def counted(**hooks) -> None:
        registered.append(hooks)
        real(**hooks)

    monkeypatch.setattr(os, "register_at_fork", counted)
    # the log capture would keep the retried finish's exception, its frames, the backend
    monkeypatch.setattr(logging.getLogger("beatq.broker"), "disabled", True)
    before = {t.ident for t in threading.enumerate()}
    gone: list[weakref.ref] = []
    for _ in range(10):
        b = connect(cluster_url, {"global_keyprefix": f"bqt-{uuid.uuid4().hex[:12]}"})
        assert isinstance(b, ClusterBackend)
        tries: list[int] = []

        def finish(tries: list[int] = tries) -> frozenset[str]:
            tries.append(1)
            if len(tries) == 1:  # meets a shard out of reach once, then lands
                raise BrokerError("a shard is out of reach")
            return frozenset()

        b.later.run(finish)  # made again in the backend's thread
        wait_for(lambda b=b, t=tries: len(t) == 2 and not b.later.trying, 5, "the finish")
        b.send([Outgoing("la", "m", b"x")])
        b.wait(["la", "lb", "lc"], 0.01)  # a wait over queues on several shards: threads
        b.close()
        gone += [weakref.ref(b), weakref.ref(b.later)]
        del b, finish
    wait_for(lambda: {t.ident for t in threading.enumerate()} <= before, 10, "the threads to end")
    assert registered == [], "a fork hook registered per backend"
    gc.collect()
    assert [r for r in gone if r() is not None] == [], "closed backends kept alive"
