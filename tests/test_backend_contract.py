"""The backend contract (beatq/brokers/base.py), one suite run on every backend.

Each test runs on memory://, on sqlite:// (a file in tmp_path) and on Redis (a key
prefix of the test's own). The SQLite-only tests at the end use several processes on one
file and kill -9 one of them mid-way.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from beatq.brokers import (
    Backend,
    BeatDispatch,
    ChordJoin,
    Claim,
    EntryState,
    Outgoing,
    ResultWrite,
    connect,
)
from beatq.exceptions import BrokerError, ConfigurationError
from tests.conftest import ROOT, scaled, wait_for


class Store:
    """One backend's storage, opened as often as a test needs clients of it."""

    def __init__(self, kind: str, url: str, options: dict[str, str]) -> None:
        self.kind, self.url, self.options = kind, url, options
        self.opened: list[Backend] = []

    def open(self) -> Backend:
        backend = connect(self.url, self.options)
        self.opened.append(backend)
        return backend


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    kind = request.param
    if kind == "memory":
        found = Store(kind, f"memory://contract-{uuid.uuid4().hex}", {})
    elif kind == "sqlite":
        found = Store(kind, f"sqlite:///{tmp_path / 'broker.db'}", {})
    else:
        prefix = request.getfixturevalue("prefix")
        found = Store(kind, request.getfixturevalue("redis_url"), {"global_keyprefix": prefix})
    yield found
    for backend in found.opened:
        backend.close()


@pytest.fixture
def b(store: Store) -> Backend:
    return store.open()


def out(id_: str, queue: str = "q", body: bytes | None = None, eta: float | None = None):
    return Outgoing(queue, id_, body if body is not None else f"body-{id_}".encode(), eta)


def ids(claims: list[Claim]) -> list[str]:
    return [c.id for c in claims]


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    """Run `fn` in a thread; its value and the monotonic time it returned land in the dict."""
    done: dict[str, object] = {}

    def run() -> None:
        done["value"] = fn()
        done["at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


# -- sending and claiming -------------------------------------------------------------------------
def test_claim_takes_oldest_first_up_to_count(b: Backend) -> None:
    b.send([out(f"m{i}") for i in range(5)])
    assert b.queue_length("q") == 5
    first = b.claim(["q"], 3, 30)
    assert ids(first.claims) == ["m0", "m1", "m2"]
    assert [(c.queue, c.body) for c in first.claims][0] == ("q", b"body-m0")
    assert b.queue_length("q") == 2
    assert ids(b.claim(["q"], 10, 30).claims) == ["m3", "m4"]
    assert b.claim(["q"], 10, 30).claims == []
    assert b.queue_length("q") == 0


def test_claim_drains_queues_in_the_order_given(b: Backend) -> None:
    b.send([out("low1", "low"), out("high1", "high"), out("low2", "low"), out("high2", "high")])
    assert ids(b.claim(["high", "low"], 3, 30).claims) == ["high1", "high2", "low1"]
    assert ids(b.claim(["other", "low"], 3, 30).claims) == ["low2"]


def test_sending_a_stored_id_again_replaces_it(b: Backend) -> None:
    b.send([out("x", body=b"first")])
    b.send([out("x", body=b"second")])
    claims = b.claim(["q"], 10, 30).claims
    assert [(c.id, c.body) for c in claims] == [("x", b"second")]


def test_an_id_sent_twice_in_one_batch_is_stored_once_the_last_copy(b: Backend) -> None:
    b.send([out("x", body=b"first"), out("y"), out("x", body=b"second")])
    assert [(c.id, c.body) for c in b.claim(["q"], 10, 30).claims] == [
        ("y", b"body-y"),
        ("x", b"second"),
    ]
    later = time.time() + 60
    b.send([out("z"), out("z", eta=later)])
    assert b.claim(["q"], 10, 30).claims == [] and [c.id for _, c in b.scheduled()] == ["z"]


def test_a_delayed_message_becomes_ready_at_its_eta(b: Backend) -> None:
    eta = time.time() + 0.3
    b.send([out("later", eta=eta), out("now")])
    claimed = b.claim(["q"], 10, 30)
    assert ids(claimed.claims) == ["now"]
    assert claimed.next_eta == pytest.approx(eta, abs=0.001)
    assert [(when, c.id) for when, c in b.scheduled()] == [(pytest.approx(eta, abs=0.001), "later")]
    got = wait_for(lambda: b.claim(["q"], 10, 30).claims, 3, "the delayed message")
    assert time.time() >= eta - 0.005
    assert ids(got) == ["later"]
    assert b.scheduled() == [] and b.claim(["q"], 10, 30).next_eta is None


def test_claim_ahead_takes_what_falls_due_within_it_and_nothing_later(b: Backend) -> None:
    now = time.time()
    b.send([out("later", eta=now + 60), out("soon", eta=now + 5), out("now")])
    assert ids(b.claim(["q"], 10, 30).claims) == ["now"]
    claimed = b.claim(["q"], 10, 30, ahead=20)
    # taken before its eta (its body still says when), claimed like any other
    assert [(c.id, c.body) for c in claimed.claims] == [("soon", b"body-soon")]
    assert claimed.next_eta == pytest.approx(now + 60, abs=0.001)
    assert ids([c for _, c in b.scheduled()]) == ["later"]
    assert b.claim(["q"], 10, 30, ahead=20).claims == []
    b.finish(ack=claimed.claims)
    assert b.queue_length("q") == 0 and ids([c for _, c in b.scheduled()]) == ["later"]


def test_claim_ahead_takes_nothing_early_while_work_is_ready(b: Backend) -> None:
    """A worker with work to do would hold an early message while that work waits."""
    b.send([out("soon", eta=time.time() + 5), out("now")])
    assert ids(b.claim(["q"], 10, 30, ahead=20).claims) == ["now"]
    assert ids(b.claim(["q"], 10, 30, ahead=20).claims) == ["soon"]


def test_wait_claim_ahead_takes_a_delayed_message_before_its_eta(b: Backend) -> None:
    eta = time.time() + 1.5
    b.send([out("later", eta=eta)])
    claimed = b.wait_claim(["q"], 0.1, 10, 30, ahead=1.0)  # woken by the send, or times out
    deadline = time.monotonic() + 10
    while not claimed.claims and time.monotonic() < deadline:
        claimed = b.wait_claim(["q"], 0.05, 10, 30, ahead=1.0)
    taken = time.time()
    assert ids(claimed.claims) == ["later"]
    assert eta - 1.0 - 0.005 <= taken < eta, "taken within `ahead` of its eta, not at it"


def test_a_due_message_goes_before_the_ready_ones(b: Backend) -> None:
    eta = time.time() + 0.15
    b.send([out("due", eta=eta)])
    b.send([out("ready1"), out("ready2")])
    time.sleep(max(eta - time.time(), 0) + 0.02)  # past the eta, not claimed yet
    assert ids(b.claim(["q"], 3, 30).claims) == ["due", "ready1", "ready2"]


def test_due_messages_go_earliest_first_even_when_claimed_in_between(b: Backend) -> None:
    """Under a backlog a claim takes only part of what fell due; what falls due after it
    goes behind the rest (not ahead of it, which starved the earliest ETA tasks), and all
    of them before the ready ones."""
    now = time.time()
    b.send([out(f"a{i}", eta=now + 0.1) for i in range(3)])
    b.send([out(f"b{i}", eta=now + 0.25) for i in range(3)])
    b.send([out("ready")])
    time.sleep(max(now + 0.1 - time.time(), 0) + 0.02)  # the a's due, not the b's
    assert ids(b.claim(["q"], 1, 30).claims) == ["a0"]
    time.sleep(max(now + 0.25 - time.time(), 0) + 0.02)  # the b's due too
    assert b.queue_length("q") == 3  # a1, a2, ready: the b's come in with the next claim
    assert ids(b.claim(["q"], 10, 30).claims) == ["a1", "a2", "b0", "b1", "b2", "ready"]


def test_a_due_message_sent_again_is_taken_once(b: Backend) -> None:
    now = time.time()
    b.send([out("d1", eta=now + 0.05), out("d2", eta=now + 0.06)])
    time.sleep(max(now + 0.06 - time.time(), 0) + 0.02)
    assert ids(b.claim(["q"], 1, 30).claims) == ["d1"]  # d2 waits, due
    b.send([out("d2")])  # replaced: ready once, at the tail
    assert b.queue_length("q") == 1
    assert ids(b.claim(["q"], 10, 30).claims) == ["d2"]
    assert b.claim(["q"], 10, 30).claims == []


def test_a_message_put_back_goes_before_one_sent_earlier(b: Backend) -> None:
    b.send([out("first"), out("second")])
    taken = b.claim(["q"], 1, 30).claims
    assert ids(taken) == ["first"]
    b.send([out("third")])
    b.release(taken)
    assert b.queue_length("q") == 3
    assert ids(b.claim(["q"], 10, 30).claims) == ["first", "second", "third"]


def test_an_eta_in_the_past_is_ready_at_once(b: Backend) -> None:
    b.send([out("past", eta=time.time() - 10)])
    assert b.queue_length("q") == 1 and b.scheduled() == []


def test_scheduled_lists_delayed_messages_by_eta(b: Backend) -> None:
    now = time.time()
    b.send([out("c", eta=now + 30), out("a", eta=now + 10), out("b", "other", eta=now + 20)])
    listed = b.scheduled()
    assert [(c.id, c.queue, c.body) for _, c in listed] == [
        ("a", "q", b"body-a"),
        ("b", "other", b"body-b"),
        ("c", "q", b"body-c"),
    ]
    assert [when for when, _ in listed] == pytest.approx([now + 10, now + 20, now + 30])
    assert ids([c for _, c in b.scheduled(limit=2)]) == ["a", "b"]
    # sending it again without an eta makes it ready, no longer delayed
    b.send([out("a")])
    assert ids([c for _, c in b.scheduled()]) == ["b", "c"] and b.queue_length("q") == 1


# -- waiting --------------------------------------------------------------------------------------
def test_wait_is_woken_by_a_send_from_another_client(store: Store, b: Backend) -> None:
    waiter = store.open()
    b.send([out("warm-up", queue="elsewhere")])  # connections and scripts ready before timing
    thread, done = in_thread(lambda: waiter.wait(["q"], 5))
    time.sleep(0.1)  # let it block
    assert thread.is_alive(), "nothing to wake it yet"
    sent = time.monotonic()
    b.send([out("m")])
    thread.join(5)
    assert done["value"] is True
    # woken by the send, not by its 5 s timeout (how fast is bench/'s business: a loaded
    # machine once took 0.3 s here)
    assert done["at"] - sent < 4.0


def test_wait_returns_at_once_when_work_is_there_and_times_out_otherwise(b: Backend) -> None:
    start = time.monotonic()
    assert b.wait(["q"], 0.3) is False
    assert 0.25 <= time.monotonic() - start < 10.0  # timed out, and did not hang
    b.send([out("m")])
    start = time.monotonic()
    assert b.wait(["q"], 5) is True
    assert time.monotonic() - start < 4.0  # at once, not after the 5 s


def test_wait_claim_takes_what_a_send_from_another_client_wakes_it_for(
    store: Store, b: Backend
) -> None:
    waiter = store.open()
    b.send([out("warm-up", queue="elsewhere")])
    thread, done = in_thread(lambda: waiter.wait_claim(["q"], 30, 10, 30))
    time.sleep(0.1)  # let it block
    assert thread.is_alive(), "nothing to wake it yet"
    sent = time.monotonic()
    b.send([out("m1"), out("m2")])
    thread.join(10)
    # woken, not timed out (Redis blocks 5 s at most, then claims: the bound is below that)
    assert done["at"] - sent < 4.5
    claimed = done["value"]
    assert ids(claimed.claims) == ["m1", "m2"]
    assert [c.body for c in claimed.claims] == [b"body-m1", b"body-m2"]
    # claimed, not just seen: nobody else gets them, and the claim's token acknowledges them
    assert b.claim(["q"], 10, 30).claims == []
    b.finish(ack=claimed.claims)
    assert b.queue_length("q") == 0 and b.scheduled() == []


def test_wait_claim_takes_a_delayed_message_once_due_with_no_send_to_wake_it(b: Backend) -> None:
    eta = time.time() + 3.0
    b.send([out("later", eta=eta)])
    claimed = b.wait_claim(["q"], 0.1, 10, 30)  # woken at once by the send, or times out
    assert claimed.claims == [] and claimed.next_eta == pytest.approx(eta)
    deadline = time.monotonic() + 10
    while not claimed.claims and time.monotonic() < deadline:
        claimed = b.wait_claim(["q"], 0.2, 10, 30)  # nothing is sent: each one times out
    assert ids(claimed.claims) == ["later"]
    assert time.time() >= eta


def test_interrupt_wait_ends_a_wait_claim_at_once_and_keeps_the_connection_in_step(
    store: Store, b: Backend
) -> None:
    waiter = store.open()
    sent = threading.Event()

    def wait_then_claim() -> tuple[object, float, object]:
        waiter.claim(["q"], 1, 30)  # connected
        first = waiter.wait_claim(["q"], 5, 10, 30)
        ended = time.monotonic()
        sent.wait(5)
        # the same thread, so the same connection: it reads its own replies
        return first, ended, waiter.claim(["q"], 10, 30)

    thread, done = in_thread(wait_then_claim)
    time.sleep(0.2)
    assert thread.is_alive()
    asked = time.monotonic()
    if not waiter.interrupt_wait():
        assert store.kind != "redis", "Redis can end its own wait"
        sent.set()
        thread.join(6)
        return
    b.send([out("after")])
    sent.set()
    thread.join(10)
    first, ended, then = done["value"]
    assert ended - asked < 4.5, "ended by the interrupt, not by its 5 s"
    if store.kind == "redis":  # the wait took the push (a timed-out one would have left it)
        assert waiter.client.llen(waiter.interrupt_key) == 0
    assert first.claims == []
    assert ids(then.claims) == ["after"]


# -- claims: visibility, renew, release -----------------------------------------------------------
def test_an_unrenewed_claim_expires_and_comes_back(b: Backend) -> None:
    b.send([out("kept"), out("dropped")])
    claimed_at = time.monotonic()
    kept, dropped = b.claim(["q"], 2, 1.5).claims
    assert [kept.id, dropped.id] == ["kept", "dropped"]
    b.renew([kept, Claim("not-claimed", "q", b"", kept.token)], 30)
    assert b.claim(["q"], 10, 30).claims == []
    back = wait_for(lambda: b.claim(["q"], 10, 30).claims, 10, "the expired claim")
    assert time.monotonic() - claimed_at >= 1.4
    assert [(c.id, c.body) for c in back] == [("dropped", b"body-dropped")]
    assert b.claim(["q"], 10, 30).claims == [], "the renewed claim stays with its holder"


def test_renew_does_not_bring_back_an_acknowledged_message(b: Backend) -> None:
    b.send([out("m")])
    claims = b.claim(["q"], 1, 0.2).claims
    b.finish(ack=claims)
    b.renew(claims, 0.1)
    time.sleep(0.3)  # past both deadlines
    assert b.claim(["q"], 10, 30).claims == [] and b.queue_length("q") == 0


def test_release_puts_messages_back_at_the_head_in_order(b: Backend) -> None:
    b.send([out("m1"), out("m2"), out("m3")])
    taken = b.claim(["q"], 2, 30).claims
    b.release(taken)
    assert b.queue_length("q") == 3
    again = b.claim(["q"], 3, 30).claims
    assert ids(again) == ["m1", "m2", "m3"]
    # an acknowledged message comes back too, with its body
    b.finish(ack=again[2:])
    b.release(again[2:])
    assert [(c.id, c.body) for c in b.claim(["q"], 10, 30).claims] == [("m3", b"body-m3")]


def test_a_released_message_is_not_redelivered_by_its_old_deadline(b: Backend) -> None:
    b.send([out("m")])
    b.release(b.claim(["q"], 1, 0.2).claims)
    again = b.claim(["q"], 1, 30).claims
    time.sleep(0.3)  # past the first claim's deadline
    assert ids(again) == ["m"] and b.claim(["q"], 10, 30).claims == []


def test_a_stale_claim_neither_acks_renews_releases_nor_dead_letters(b: Backend) -> None:
    """A worker whose claim expired (a long pause) while its message went to another
    worker holds a stale claim: nothing it does may delete or duplicate the message."""
    b.send([out("m")])
    (stale,) = b.claim(["q"], 1, 0.2).claims
    (fresh,) = wait_for(lambda: b.claim(["q"], 1, 0.2).claims, 3, "the redelivery")
    assert fresh.id == stale.id and fresh.token != stale.token
    b.renew([fresh], 30)  # the new holder keeps it
    b.finish(ack=[stale], results=[ResultWrite("m", b"SUCCESS", 60)])
    b.renew([stale], 0.05)
    b.dead_letter(stale, "stale")
    b.release([stale])
    assert b.get_result("m") == b"SUCCESS", "the rest of the finish happens"
    assert b.dead_letters() == [] and b.queue_length("q") == 0
    time.sleep(0.3)  # past the stale renewal: had it counted, the message would be back
    assert b.claim(["q"], 10, 30).claims == [], "still held by its new holder, once"
    b.finish(ack=[fresh])
    time.sleep(0.1)
    assert b.claim(["q"], 10, 30).claims == [] and b.queue_length("q") == 0


def test_a_stale_ack_of_a_message_back_in_its_queue_leaves_it_there(b: Backend) -> None:
    b.send([out("m")])
    (stale,) = b.claim(["q"], 1, 0.1).claims
    time.sleep(0.2)
    b.send([out("other", "q2")])
    assert ids(b.claim(["q2"], 1, 30).claims) == ["other"]  # puts the expired claim back
    assert b.queue_length("q") == 1
    b.finish(ack=[stale])
    b.dead_letter(stale, "stale")
    assert b.queue_length("q") == 1 and b.dead_letters() == []
    (again,) = b.claim(["q"], 1, 30).claims
    assert again.id == "m" and again.token != stale.token


# -- finishing ------------------------------------------------------------------------------------
def test_finish_acknowledges_stores_results_and_sends_in_one_step(b: Backend) -> None:
    b.send([out("m")])
    claims = b.claim(["q"], 1, 0.2).claims
    later = time.time() + 60
    b.finish(
        ack=claims,
        results=[ResultWrite("m", b"SUCCESS", 60), ResultWrite("m2", b"STARTED", 60, final=False)],
        send=[out("next", "callbacks"), out("retry", eta=later)],
    )
    assert b.get_result("m") == b"SUCCESS" and b.get_result("m2") == b"STARTED"
    assert ids(b.claim(["callbacks"], 10, 30).claims) == ["next"]
    assert [c.id for _, c in b.scheduled()] == ["retry"]
    time.sleep(0.3)  # past the claim's deadline: acknowledged for good
    assert b.claim(["q"], 10, 30).claims == []


def test_a_finish_repeated_with_its_token_sends_nothing_twice(b: Backend) -> None:
    # the callback of a finish whose reply was lost runs, then the finish is retried
    b.send([out("task")])
    task = b.claim(["q"], 1, 30).claims
    finish = dict(ack=task, results=[ResultWrite("task", b"SUCCESS", 60)], send=[out("cb")])
    b.finish(**finish, token="finish-1")
    callback = b.claim(["q"], 10, 30).claims
    assert ids(callback) == ["cb"]
    b.finish(ack=callback)
    b.finish(**finish, token="finish-1")
    assert b.claim(["q"], 10, 30).claims == [], "the callback was sent again"
    b.finish(send=[out("cb2")], token="finish-2")
    assert ids(b.claim(["q"], 10, 30).claims) == ["cb2"], "another token is another finish"


def test_a_final_result_replaces_the_state_and_is_read_first(b: Backend) -> None:
    b.finish(results=[ResultWrite("t", b"STARTED", 60, final=False)])
    assert b.get_result("t") == b"STARTED"
    assert b.get_results(["t"]) == [None], "get_results reads final states only"
    b.finish(results=[ResultWrite("t", b"SUCCESS", 60)])
    assert b.get_result("t") == b"SUCCESS"
    b.finish(results=[ResultWrite("t", b"RETRY", 60, final=False)])
    assert b.get_result("t") == b"SUCCESS", "a final state wins over a later non-final one"
    b.finish(results=[ResultWrite("u", b"FAILURE", 60)])
    assert b.get_results(["u", "missing", "t"]) == [b"FAILURE", None, b"SUCCESS"]


def test_forget_deletes_every_state_of_a_task(b: Backend) -> None:
    b.finish(results=[ResultWrite("t", b"SUCCESS", 60), ResultWrite("s", b"STARTED", 60, False)])
    b.forget("t")
    b.forget("s")
    b.forget("never-stored")
    assert b.get_result("t") is None and b.get_result("s") is None
    assert b.get_results(["t"]) == [None]


def test_results_expire_after_their_ttl(b: Backend) -> None:
    stored = time.monotonic()
    b.finish(results=[ResultWrite("short", b"R", 0.3), ResultWrite("long", b"L", 60)])
    b.finish(results=[ResultWrite("state", b"S", 0.3, final=False)])
    assert b.get_result("short") == b"R" and b.get_result("state") == b"S"
    wait_for(lambda: b.get_result("short") is None, 3, "the result to expire")
    assert time.monotonic() - stored >= 0.25
    wait_for(lambda: b.get_result("state") is None, 3, "the state to expire")
    assert b.get_results(["short", "long"]) == [None, b"L"]


def test_a_chord_member_counts_once_and_the_unlock_is_sent_once(b: Backend) -> None:
    def join(member: str) -> ChordJoin:
        # every finisher builds its own unlock message, with an id of its own
        return ChordJoin("g1", member, 3, out(f"unlock-{uuid.uuid4().hex}", "unlocks"), 60)

    b.finish(join=join("a"))
    b.finish(join=join("a"))
    b.finish(join=join("b"))
    b.finish(join=join("b"))
    assert b.queue_length("unlocks") == 0, "two distinct members of three"
    b.finish(join=join("c"))
    assert b.queue_length("unlocks") == 1
    b.finish(join=join("c"))
    b.finish(join=join("a"))
    assert b.queue_length("unlocks") == 1
    assert len(b.claim(["unlocks"], 10, 30).claims) == 1


def test_concurrent_chord_members_fire_the_unlock_exactly_once(store: Store) -> None:
    members = [f"m{i}" for i in range(8)]
    clients = [store.open() for _ in range(4)]

    def finish_all(client: Backend) -> None:
        for member in members:  # every client finishes every member: 4 times each
            unlock = out(f"unlock-{uuid.uuid4().hex}", "unlocks")
            join = ChordJoin("g2", member, len(members), unlock, 60)
            client.finish(results=[ResultWrite(member, b"SUCCESS", 60)], join=join)

    threads = [threading.Thread(target=finish_all, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert clients[0].queue_length("unlocks") == 1
    assert len(clients[0].claim(["unlocks"], 10, 30).claims) == 1


# -- results: waiting -----------------------------------------------------------------------------
def test_wait_result_is_woken_by_a_finish_in_another_thread(store: Store, b: Backend) -> None:
    waiter = store.open()
    thread, done = in_thread(lambda: waiter.wait_result("t", 5))
    b.finish(results=[ResultWrite("t", b"STARTED", 60, final=False)])
    thread.join(0.15)
    assert thread.is_alive(), "a non-final state does not end the wait"
    finished = time.monotonic()
    b.finish(results=[ResultWrite("t", b"SUCCESS", 60)])
    thread.join(5)
    assert done["value"] == b"SUCCESS"
    assert done["at"] - finished < min(scaled(1.0), 4.0)  # woken, not timed out (5 s)


def test_wait_result_returns_a_stored_result_at_once_and_none_after_timeout(b: Backend) -> None:
    b.finish(results=[ResultWrite("t", b"SUCCESS", 60)])
    start = time.monotonic()
    assert b.wait_result("t", 5) == b"SUCCESS"
    assert b.wait_result("t", None) == b"SUCCESS"
    assert time.monotonic() - start < min(scaled(1.0), 4.0)  # at once, not after its 5 s
    start = time.monotonic()
    assert b.wait_result("missing", 0.3) is None
    assert 0.25 <= time.monotonic() - start < 10.0  # timed out, and did not hang


def test_every_waiter_on_a_result_wakes(store: Store, b: Backend) -> None:
    waiters = [in_thread(lambda w=store.open(): w.wait_result("t", 5)) for _ in range(3)]
    time.sleep(0.05)
    b.finish(results=[ResultWrite("t", b"SUCCESS", 60)])
    for thread, done in waiters:
        thread.join(5)
        assert done["value"] == b"SUCCESS"


# -- dead letters ---------------------------------------------------------------------------------
def test_dead_letters_keep_reason_and_body_and_can_be_requeued(b: Backend) -> None:
    b.send([out("d1"), out("d2"), out("d3")])
    c1, c2, c3 = b.claim(["q"], 3, 0.2).claims
    before = time.time()
    b.dead_letter(c1, "cannot decode")
    b.dead_letter(c2, "rejected")
    b.dead_letter(c3, "expired")
    letters = b.dead_letters()
    assert [(x.id, x.queue, x.reason, x.body) for x in letters] == [
        ("d1", "q", "cannot decode", b"body-d1"),
        ("d2", "q", "rejected", b"body-d2"),
        ("d3", "q", "expired", b"body-d3"),
    ]
    assert all(before - 1 <= x.time <= time.time() + 1 for x in letters)
    assert ids(b.dead_letters(limit=1)) == ["d1"]  # type: ignore[arg-type]
    time.sleep(0.3)  # past the claims' deadline: a dead letter is not redelivered
    assert b.claim(["q"], 10, 30).claims == []

    assert b.requeue_dead(["d2", "unknown"]) == ["d2"]
    assert [x.id for x in b.dead_letters()] == ["d1", "d3"]
    assert [(c.id, c.body) for c in b.claim(["q"], 10, 30).claims] == [("d2", b"body-d2")]
    assert b.requeue_dead() == ["d1", "d3"]
    assert b.dead_letters() == [] and b.queue_length("q") == 2
    assert b.requeue_dead() == []


# -- leases ---------------------------------------------------------------------------------------
def test_a_lease_has_one_holder_and_fences_with_its_token(b: Backend) -> None:
    token = b.acquire_lease("L", "alice", 10)
    assert token is not None and token >= 1
    assert b.acquire_lease("L", "bob", 10) is None
    assert b.acquire_lease("L", "alice", 10) is None, "not re-entrant"
    lease = b.get_lease("L")
    assert lease is not None and (lease.holder, lease.token) == ("alice", token)
    assert 9 < lease.remaining <= 10
    assert lease.since == pytest.approx(time.time(), abs=2)

    assert b.renew_lease("L", "alice", token + 1, 10) is False
    assert b.renew_lease("L", "bob", token, 10) is False
    assert b.renew_lease("L", "alice", token, 20) is True
    assert b.get_lease("L").remaining > 19  # type: ignore[union-attr]

    b.release_lease("L", "alice", token + 1)
    assert b.get_lease("L") is not None, "a wrong token releases nothing"
    b.release_lease("L", "alice", token)
    assert b.get_lease("L") is None
    assert b.renew_lease("L", "alice", token, 10) is False
    second = b.acquire_lease("L", "bob", 10)
    assert second is not None and second > token
    assert b.get_lease("other") is None


def test_an_expired_lease_can_be_taken_with_a_greater_token(b: Backend) -> None:
    first = b.acquire_lease("L", "alice", 0.3)
    assert first is not None
    wait_for(lambda: b.get_lease("L") is None, 3, "the lease to expire")
    second = b.acquire_lease("L", "bob", 10)
    assert second is not None and second > first
    assert b.renew_lease("L", "alice", first, 10) is False
    b.release_lease("L", "alice", first)
    assert b.get_lease("L").holder == "bob"  # type: ignore[union-attr]


# -- beat state -----------------------------------------------------------------------------------
def test_beat_dispatch_outcomes(b: Backend) -> None:
    token = b.acquire_lease("beat", "leader", 30)
    assert token is not None

    def dispatch(slot, next_run, *, send=(), busy=None, holder="leader", tok=token, info=None):
        info = info or json.dumps({"slot": slot}).encode()
        return b.beat_dispatch("beat", holder, tok, "e", slot, next_run, info, list(send), busy)

    def entry() -> EntryState:
        return b.beat_entries()["e"]

    assert dispatch(100.0, 110.0, send=[out("run1")]) == "sent"
    assert entry() == EntryState("e", 100.0, 110.0, False, b'{"slot": 100.0}')
    assert b.queue_length("q") == 1

    # the same slot or an earlier one: done, nothing sent, the next run still moves
    assert dispatch(100.0, 120.0, send=[out("again")]) == "done"
    assert dispatch(90.0, 120.0, send=[out("older")]) == "done"
    assert entry() == EntryState("e", 100.0, 120.0, False, b'{"slot": 100.0}')
    assert b.queue_length("q") == 1

    # fencing: another holder, or a stale token, changes nothing
    assert dispatch(130.0, 140.0, send=[out("x")], holder="intruder") == "lost"
    assert dispatch(130.0, 140.0, send=[out("x")], tok=token + 1) == "lost"
    assert entry() == EntryState("e", 100.0, 120.0, False, b'{"slot": 100.0}')

    # paused: settled and skipped, nothing sent
    b.beat_pause("e", True)
    assert entry().paused is True
    assert dispatch(110.0, 120.0, send=[out("paused")]) == "paused"
    assert entry() == EntryState("e", 110.0, 120.0, True, b'{"slot": 100.0}')
    b.beat_pause("e", False)

    # busy: the last run's message is still stored
    assert dispatch(120.0, 130.0, send=[out("overlap")], busy="run1") == "busy"
    assert entry().settled == 120.0 and b.queue_length("q") == 1
    b.finish(ack=b.claim(["q"], 1, 30).claims)
    assert dispatch(130.0, None, send=[out("run2")], busy="run1") == "sent"
    assert entry() == EntryState("e", 130.0, None, False, b'{"slot": 130.0}')
    assert ids(b.claim(["q"], 10, 30).claims) == ["run2"]

    # an empty send settles a slot given up by catch-up
    assert dispatch(140.0, 150.0) == "sent"
    assert entry().settled == 140.0 and b.queue_length("q") == 0

    b.release_lease("beat", "leader", token)
    assert dispatch(150.0, 160.0, send=[out("late")]) == "lost"


def test_beat_dispatch_many_settles_each_run_as_beat_dispatch_would(b: Backend) -> None:
    token = b.acquire_lease("beat", "leader", 30)
    assert token is not None
    b.beat_dispatch("beat", "leader", token, "done", 100.0, 110.0, b"{}", [out("d0")])
    b.beat_pause("paused", True)
    runs = [BeatDispatch(f"e{i}", 100.0, 160.0, b'{"i": %d}' % i, [out(f"m{i}")]) for i in range(3)]
    runs += [
        BeatDispatch("done", 100.0, 110.0, b"{}", [out("d1")]),
        BeatDispatch("paused", 100.0, 160.0, b"{}", [out("p1")]),
    ]
    outcomes = b.beat_dispatch_many("beat", "leader", token, runs)
    assert outcomes == ["sent", "sent", "sent", "done", "paused"]
    assert ids(b.claim(["q"], 10, 30).claims) == ["d0", "m0", "m1", "m2"]
    state = b.beat_entries()
    assert [state[f"e{i}"].settled for i in range(3)] == [100.0] * 3
    assert state["e2"].info == b'{"i": 2}' and state["e2"].next_run == 160.0
    stale = b.beat_dispatch_many("beat", "leader", token + 1, runs[:1])
    assert stale == ["lost"]


def test_beat_plan_is_fenced_and_keeps_or_sets_entries(b: Backend) -> None:
    token = b.acquire_lease("beat", "leader", 30)
    assert token is not None
    assert b.beat_plan("beat", "leader", token + 1, {"a": (1.0, 2.0, b"A")}) is False
    assert b.beat_plan("beat", "other", token, {"a": (1.0, 2.0, b"A")}) is False
    assert b.beat_entries() == {}

    assert b.beat_plan("beat", "leader", token, {"a": (1.0, 2.0, b"A"), "b": (None, 5.0, b"B")})
    assert b.beat_entries() == {
        "a": EntryState("a", 1.0, 2.0, False, b"A"),
        "b": EntryState("b", None, 5.0, False, b"B"),
    }
    b.beat_pause("b", True)
    assert b.beat_entries()["b"].paused is True
    # a settled time of None keeps the stored one; removing forgets the pause too
    assert b.beat_plan("beat", "leader", token, {"a": (None, None, b"A2")}, remove=["b"])
    assert b.beat_entries() == {"a": EntryState("a", 1.0, None, False, b"A2")}
    assert b.beat_plan("beat", "leader", token, {"b": (None, 6.0, b"B")})
    assert b.beat_entries()["b"] == EntryState("b", None, 6.0, False, b"B")

    b.release_lease("beat", "leader", token)
    assert b.beat_plan("beat", "leader", token, {}, remove=["a"]) is False
    assert set(b.beat_entries()) == {"a", "b"}


# -- workers --------------------------------------------------------------------------------------
def test_heartbeats_expire_and_unregister_forgets_at_once(b: Backend) -> None:
    b.heartbeat("w1", b'{"n": 1}', 0.3)
    b.heartbeat("w2", b'{"n": 2}', 30)
    b.heartbeat("w2", b'{"n": 3}', 30)
    assert b.workers() == {"w1": b'{"n": 1}', "w2": b'{"n": 3}'}
    b.unregister("w2")
    assert b.workers() == {"w1": b'{"n": 1}'}
    wait_for(lambda: b.workers() == {}, 3, "the heartbeat to expire")


def test_ping_and_several_clients_share_one_store(store: Store, b: Backend) -> None:
    b.ping()
    other = store.open()
    b.send([out("m")])
    assert ids(other.claim(["q"], 10, 30).claims) == ["m"]


# -- memory:// only -------------------------------------------------------------------------------
def test_memory_stores_are_named_by_url() -> None:
    name = uuid.uuid4().hex
    urls = (f"memory://{name}", f"memory://{name}/", f"memory://{name}-other")
    first, same, other = (connect(u) for u in urls)
    first.send([out("m")])
    assert same.queue_length("q") == 1
    assert other.queue_length("q") == 0


# -- sqlite:// only -------------------------------------------------------------------------------
def test_sqlite_urls_name_a_file_relative_or_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = connect("sqlite:///rel/broker.db")
    with pytest.raises(BrokerError, match="rel/broker.db"):
        relative.ping()  # its folder does not exist: unreachable, as a server would be
    (tmp_path / "rel").mkdir()
    relative.ping()
    absolute = connect(f"sqlite:///{tmp_path}/rel/broker.db")  # four slashes
    relative.send([out("m")])
    assert absolute.queue_length("q") == 1
    with sqlite3.connect(tmp_path / "rel" / "broker.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    for bad in ("sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite://host/x.db"):
        with pytest.raises(ConfigurationError):
            connect(bad)
    relative.close()
    absolute.close()


def _drain(url: str, start: object, results: object) -> None:
    """A process of its own: claim and acknowledge until the queue is empty."""
    backend = connect(url)
    backend.ping()
    results.put("ready")  # type: ignore[attr-defined]
    start.wait(10)  # type: ignore[attr-defined]
    got: list[str] = []
    while True:
        claims = backend.claim(["q"], 3, 30).claims
        if not claims:
            if backend.queue_length("q") == 0:
                break
            continue
        got += [c.id for c in claims]
        time.sleep(0.001)  # running the tasks: the other process gets its turns
        backend.finish(ack=claims, results=[ResultWrite(c.id, b"ok", 60) for c in claims])
    results.put((os.getpid(), got))  # type: ignore[attr-defined]
    backend.close()


def test_sqlite_two_processes_never_claim_the_same_message(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    backend = connect(url)
    sent = [f"m{i:05d}" for i in range(1500)]
    backend.send([out(i) for i in sent])
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_drain, args=(url, start, results)) for _ in range(2)]
    for p in procs:
        p.start()
    assert [results.get(timeout=scaled(30)) for _ in procs] == ["ready", "ready"]
    start.set()  # both at once: neither drains the queue before the other has started
    got = [results.get(timeout=scaled(30)) for _ in procs]
    for p in procs:
        p.join(10)
    taken = [m for _, batch in got for m in batch]
    assert len(taken) == len(set(taken)), "a message was claimed twice"
    assert sorted(taken) == sent
    assert all(batch for _, batch in got), "both processes took some"
    assert backend.get_results(sent[:3] + sent[-3:]) == [b"ok"] * 6
    backend.close()


def _reap(pid: int, timeout: float = 10.0) -> int:
    """The exit code of child `pid`; kill -9 it and fail if it hangs (a deadlock after fork)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the forked child {pid} hung")


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_sqlite_forking_while_threads_use_the_file_is_safe(tmp_path: Path) -> None:
    """The prefork pool forks while the worker's threads use the file: the connections
    are closed around the fork, and parent and children each open their own."""
    path = tmp_path / "forked.db"
    backend = connect(f"sqlite:///{path}")
    stop = threading.Event()

    def hammer(k: int) -> None:
        n = 0
        while not stop.is_set():
            backend.send([out(f"p{k}-{n}")])
            n += 1
            for c in backend.claim(["q"], 2, 30).claims:
                backend.finish(ack=[c], results=[ResultWrite(c.id, b"ok", 60)])

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(10):
            pid = os.fork()
            if pid == 0:  # the child: use the inherited backend object, then leave at once
                code = 1
                try:
                    backend.send([out(f"c{i}-{n}") for n in range(20)])
                    for c in backend.claim(["q"], 5, 30).claims:
                        backend.finish(ack=[c], results=[ResultWrite(c.id, b"ok", 60)])
                    code = 0
                finally:
                    os._exit(code)
            assert _reap(pid) == 0
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kept = {r[0] for r in raw.execute("SELECT id FROM messages")}
    kept |= {r[0] for r in raw.execute("SELECT task_id FROM results")}
    raw.close()
    assert {f"c{i}-{n}" for i in range(10) for n in range(20)} <= kept
    backend.send([out("after")])  # the parent's threads reopened their connections
    assert backend.queue_length("q") >= 1
    backend.close()


_WRITER = """
import sys
from beatq.brokers import Outgoing, ResultWrite, connect

backend = connect(sys.argv[1])
backend.ping()  # the file and its tables exist before the test starts its clock
tag, n = sys.argv[2], 0
print("ready", flush=True)
while True:
    backend.send([Outgoing("q", f"{tag}{n + i:07d}", b"x" * 200) for i in range(5)])
    n += 5
    for c in backend.claim(["q"], 3, 0.2).claims:
        backend.finish(
            ack=[c],
            results=[ResultWrite(c.id, b"done", 600)],
            send=[Outgoing("followups", "f-" + c.id, b"y")],
        )
"""


def test_sqlite_kill9_mid_way_leaves_the_file_consistent(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    url = f"sqlite:///{path}"
    for round_, delay in enumerate((0.05, 0.2, 0.4)):
        tag = f"r{round_}-"
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, tag],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(delay)  # somewhere in the middle of its work
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        proc.stdout.close()

        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in raw.execute("SELECT id FROM messages WHERE queue = 'q'")}
        stored = {i for i in stored if i.startswith(tag)}
        done = {r[0] for r in raw.execute("SELECT task_id FROM results")}
        done = {i for i in done if i.startswith(tag)}
        followups = {r[0] for r in raw.execute("SELECT id FROM messages WHERE queue = 'followups'")}
        raw.close()
        assert not stored & done, "acknowledged and still stored"
        numbers = sorted(int(i[len(tag) :]) for i in stored | done)
        assert numbers and numbers == list(range(len(numbers))), "a message was lost"
        assert len(numbers) % 5 == 0, "a send was cut in half"
        assert {"f-" + i for i in done} <= followups, "a finish was cut in half"

    # the killed writers' locks are gone: another process works on the file
    backend = connect(url)
    wait_for(lambda: backend.claim(["q"], 10_000, 30).claims, 3, "the abandoned claims")
    backend.close()


def _await_result(url: str, ready: object, results: object) -> None:
    backend = connect(url)
    ready.set()  # type: ignore[attr-defined]
    value = backend.wait_result("cross", 10)
    results.put((value, time.time()))  # type: ignore[attr-defined]
    backend.close()


@pytest.mark.parametrize("idle", [0.1, 1.0], ids=["busy", "idle"])
def test_sqlite_wait_result_across_processes_wakes_within_the_poll_interval(
    tmp_path: Path, idle: float
) -> None:
    url = f"sqlite:///{tmp_path / 'latency.db'}"
    backend = connect(url)
    backend.ping()
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_await_result, args=(url, ready, results))
    proc.start()
    assert ready.wait(60)  # a spawned interpreter importing beatq: seconds on a loaded machine
    time.sleep(idle)  # after a second of nothing the waiter polls at its slow pace
    finished = time.time()
    backend.finish(results=[ResultWrite("cross", b"SUCCESS", 60)])
    value, woke = results.get(timeout=scaled(10))
    proc.join(5)
    assert value == b"SUCCESS"
    assert woke - finished < 0.1
    backend.close()
