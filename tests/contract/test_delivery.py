"""The Delivery role (roles.Delivery): send, claim, wait, renew, release, finish, dead letters."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from beatq.brokers import (
    Backend,
    ChordJoin,
    Claim,
    ResultWrite,
)
from tests.conftest import wait_for
from tests.contract.conftest import Store, ids, in_thread, out


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
    b.send([out("ready")])
    time.sleep(max(now + 0.1 - time.time(), 0) + 0.02)  # the a's due
    assert ids(b.claim(["q"], 1, 30).claims) == ["a0"]
    # due after that claim, whenever it came (a loaded machine's claim can be late)
    later = time.time() + 0.1
    b.send([out(f"b{i}", eta=later) for i in range(3)])
    time.sleep(max(later - time.time(), 0) + 0.02)  # the b's due too
    assert b.queue_length("q") == 3  # a1, a2, ready: the b's come in with the next claim
    assert ids(b.claim(["q"], 10, 30).claims) == ["a1", "a2", "b0", "b1", "b2", "ready"]


def test_a_due_message_sent_again_is_taken_once(b: Backend) -> None:
    now = time.time()  # far enough ahead that both still wait when a loaded machine sends
    b.send([out("d1", eta=now + 0.3), out("d2", eta=now + 0.31)])
    time.sleep(max(now + 0.31 - time.time(), 0) + 0.02)
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


def test_a_claim_that_leaves_work_behind_wakes_the_next_wait(b: Backend) -> None:
    b.send([out("m1"), out("m2")])
    assert b.wait(["q"], 5) is True  # one idle worker woke for the send
    assert ids(b.claim(["q"], 1, 30).claims) == ["m1"]  # it took one: m2 is left behind
    start = time.monotonic()
    assert b.wait(["q"], 5) is True  # another idle worker wakes for m2
    assert time.monotonic() - start < 4.0  # at once, not after the 5 s
    assert ids(b.claim(["q"], 10, 30).claims) == ["m2"]  # it drained the queue
    assert b.wait(["q"], 0.3) is False  # nothing left: nobody is woken for nothing


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


def test_a_message_back_from_an_expired_claim_is_marked_redelivered(b: Backend) -> None:
    """What `delivery_info["redelivered"]` reads (issue 22): set for a message put back as
    its claim expired (its worker died), not for a fresh one nor one sent again by id."""
    b.send([out("lost")])
    assert [(c.id, c.redelivered) for c in b.claim(["q"], 1, 0.5).claims] == [("lost", False)]
    back = wait_for(lambda: b.claim(["q"], 1, 30).claims, 10, "the expired claim")
    assert [(c.id, c.redelivered) for c in back] == [("lost", True)]
    b.release(back)  # given back unstarted (a warm stop): still delivered before
    again = b.claim(["q"], 1, 30).claims
    assert [(c.id, c.redelivered, c.body) for c in again] == [("lost", True, b"body-lost")]
    back = again
    b.send([out("fresh")])
    assert [(c.id, c.redelivered) for c in b.claim(["q"], 1, 30).claims] == [("fresh", False)]
    b.finish(ack=back, send=[out("lost")])  # a retry: the same id, a new message
    assert [(c.id, c.redelivered) for c in b.claim(["q"], 1, 30).claims] == [("lost", False)]


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
    refused = b.finish(ack=[stale], results=[ResultWrite("m", b"SUCCESS", 60)])
    assert refused == {"m"}, "told: its worker must not start it"
    b.renew([stale], 0.05)
    b.dead_letter(stale, "stale")
    b.release([stale])
    assert b.get_result("m") == b"SUCCESS", "the rest of the finish happens"
    assert b.dead_letters() == [] and b.queue_length("q") == 0
    time.sleep(0.3)  # past the stale renewal: had it counted, the message would be back
    assert b.claim(["q"], 10, 30).claims == [], "still held by its new holder, once"
    assert b.finish(ack=[fresh]) == set()
    time.sleep(0.1)
    assert b.claim(["q"], 10, 30).claims == [] and b.queue_length("q") == 0


def test_a_stale_ack_of_a_message_back_in_its_queue_leaves_it_there(
    store: Store, b: Backend
) -> None:
    b.send([out("m")])
    (stale,) = b.claim(["q"], 1, 0.1).claims
    time.sleep(0.2)
    if store.kind == "cluster":  # a queue's expired claims go back as it is claimed from
        assert b.claim(["q"], 0, 30).claims == []
    else:
        b.send([out("other", "q2")])
        assert ids(b.claim(["q2"], 1, 30).claims) == ["other"]  # puts the expired claim back
    assert b.queue_length("q") == 1
    assert b.finish(ack=[stale]) == {"m"}
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


# -- dead letters ---------------------------------------------------------------------------------
def test_requeuing_a_dead_letter_forgets_the_state_stored_as_it_died(b: Backend) -> None:
    """A worker stores FAILURE for a message it dead-letters (so nobody waits PENDING); sent
    back, the message's waiters wait for its new run, not that old outcome."""
    b.send([out("m")])
    [claim] = b.claim(["q"], 1, 30).claims
    b.dead_letter(claim, "not in accept_content")
    b.store_results([ResultWrite("m", b"FAILURE", 60)])
    assert b.get_result("m") == b"FAILURE"
    assert b.requeue_dead(["m"]) == ["m"]
    assert b.get_result("m") is None
    assert ids(b.claim(["q"], 1, 30).claims) == ["m"]


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


def test_a_stale_ack_is_told_so_after_the_redelivery_ran_and_was_acknowledged(
    b: Backend,
) -> None:
    """A worker paused past its visibility timeout resumes after its message was run and
    acknowledged elsewhere (gone from the store): its acknowledgement at the task's start
    is still refused as stale, so it does not run the task a second time. A live claim's
    acknowledgement made twice (a retry after a lost reply) is not stale."""
    b.send([out("m")])
    (stale,) = b.claim(["q"], 1, 0.2).claims
    (fresh,) = wait_for(lambda: b.claim(["q"], 1, 0.2).claims, 3, "the redelivery")
    assert fresh.id == stale.id == "m"
    assert b.finish(ack=[fresh]) == set()  # run there, acknowledged as it started
    assert b.finish(ack=[stale]) == {"m"}
    assert b.finish(ack=[stale], results=[ResultWrite("m", b"SUCCESS", 60)]) == {"m"}
    b.send([out("n")])
    (live,) = b.claim(["q"], 1, 30).claims
    assert live.id == "n"
    assert b.finish(ack=[live]) == set()
    assert b.finish(ack=[live]) == set(), "acknowledged already, by this claim"
    assert b.finish(ack=[stale, live], token=uuid.uuid4().hex) == {"m"}


def test_a_message_sent_in_a_stale_ones_stead_is_not_sent(b: Backend) -> None:
    """A task retried (or a rate-limited one put back) sends its message again, by its id,
    with its acknowledgement: when that acknowledgement is stale, the message is another
    delivery's, and the copy would run it twice."""
    b.send([out("m")])
    (stale,) = b.claim(["q"], 1, 0.2).claims
    (fresh,) = wait_for(lambda: b.claim(["q"], 1, 30).claims, 3, "the redelivery")
    again = out("m", body=b"retry", eta=time.time() + 0.2)
    assert b.finish(ack=[stale], send=[again, out("other")], token=uuid.uuid4().hex) == {"m"}
    assert [c.id for _, c in b.scheduled()] == [], "the retry of a stale claim is not sent"
    assert ids(b.claim(["q"], 10, 30).claims) == ["other"], "the rest of the finish is"
    assert b.finish(ack=[fresh], send=[again]) == set()
    assert [c.id for _, c in b.scheduled()] == ["m"], "the live one's retry is sent"


def test_a_retry_of_a_stale_claim_sent_to_another_queue_is_not_sent(b: Backend) -> None:
    """As above, the retry sent to another queue (retry(queue=...)): on a Redis Cluster
    another queue is another slot, which a finish sends to before it acknowledges."""
    b.send([out("m")])
    (stale,) = b.claim(["q"], 1, 0.2).claims
    (fresh,) = wait_for(lambda: b.claim(["q"], 1, 30).claims, 3, "the redelivery")
    again = out("m", "q2", body=b"retry")
    token = uuid.uuid4().hex
    assert b.finish(ack=[stale], send=[again, out("o1", "q2")], token=token) == {"m"}
    assert b.finish(ack=[stale], send=[again, out("o2", "q2")]) == {"m"}  # with no token
    assert ids(b.claim(["q2"], 10, 30).claims) == ["o1", "o2"], "the rest is sent"
    assert b.finish(ack=[fresh], send=[again], token=uuid.uuid4().hex) == set()
    assert ids(b.claim(["q2"], 10, 30).claims) == ["m"], "the live one's retry is sent"
