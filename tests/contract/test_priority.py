"""Priorities within a queue (Outgoing.priority, Delivery.claim): on every backend.

A higher priority is claimed first within its queue, first come first served within a
priority; queues keep the order the claim gives them; a delayed message keeps its
priority when it falls due, and a released or expired claim when it goes back.
"""

from __future__ import annotations

import time

from beatq.brokers import Backend, Outgoing
from tests.conftest import wait_for
from tests.contract.conftest import ids


def out(id_: str, priority: int = 0, queue: str = "q", eta: float | None = None) -> Outgoing:
    return Outgoing(queue, id_, f"body-{id_}".encode(), eta, False, priority)


def test_a_higher_priority_is_claimed_first_fifo_within_a_priority(b: Backend) -> None:
    b.send([out("p0a"), out("p5a", 5), out("p9a", 9), out("p5b", 5), out("p0b"), out("p9b", 9)])
    b.send([out("p255", 255)])  # one at a time too (a store's single-message path)
    b.send([out("p1", 1)])
    assert b.queue_length("q") == 8
    claimed = b.claim(["q"], 3, 30).claims
    assert ids(claimed) == ["p255", "p9a", "p9b"]
    assert [c.priority for c in claimed] == [255, 9, 9]
    assert [(c.queue, c.body) for c in claimed][1] == ("q", b"body-p9a")
    assert ids(b.claim(["q"], 10, 30).claims) == ["p5a", "p5b", "p1", "p0a", "p0b"]
    assert b.queue_length("q") == 0


def test_a_claim_that_leaves_a_priority_behind_wakes_the_next_wait(b: Backend) -> None:
    b.send([out("hi1", 3), out("hi2", 3)])
    assert b.wait(["q"], 5) is True  # one idle worker woke for the send
    assert ids(b.claim(["q"], 1, 30).claims) == ["hi1"]
    start = time.monotonic()
    assert b.wait(["q"], 5) is True  # another wakes for hi2
    assert time.monotonic() - start < 4.0
    assert ids(b.claim(["q"], 10, 30).claims) == ["hi2"]
    assert b.wait(["q"], 0.3) is False


def test_queue_order_ranks_before_priority(b: Backend) -> None:
    b.send([out("low9", 9, "low"), out("high0", 0, "high"), out("high3", 3, "high")])
    assert ids(b.claim(["high", "low"], 10, 30).claims) == ["high3", "high0", "low9"]


def test_a_message_sent_later_with_a_higher_priority_overtakes(b: Backend) -> None:
    b.send([out(f"n{i}") for i in range(3)])
    assert ids(b.claim(["q"], 1, 30).claims) == ["n0"]
    b.send([out("urgent", 2)])
    assert ids(b.claim(["q"], 10, 30).claims) == ["urgent", "n1", "n2"]


def test_released_and_expired_claims_keep_their_priority(b: Backend) -> None:
    b.send([out("hi", 7), out("lo")])
    first = b.claim(["q"], 1, 30).claims
    assert ids(first) == ["hi"]
    b.release(first)
    b.send([out("lo2"), out("hi2", 7)])
    assert ids(b.claim(["q"], 10, 30).claims) == ["hi", "hi2", "lo", "lo2"]
    b.send([out("x", 4), out("y")])
    assert ids(b.claim(["q"], 1, 0.05).claims) == ["x"]  # its worker dies: claim expires
    b.send([out("z", 4)])
    time.sleep(0.1)
    assert ids(b.claim(["q"], 10, 30).claims) == ["x", "z", "y"]


def test_a_delayed_message_keeps_its_priority_when_it_falls_due(b: Backend) -> None:
    eta = time.time() + 0.2
    b.send([out("late-hi", 8, eta=eta), out("late-lo", 0, eta=eta)])
    b.send([out("now-lo"), out("now-mid", 3)])
    time.sleep(0.25)
    assert ids(b.claim(["q"], 10, 30).claims) == ["late-hi", "now-mid", "late-lo", "now-lo"]


def test_above_takes_from_the_last_queue_only_what_outranks(b: Backend) -> None:
    b.send([out("a0"), out("a4", 4), out("a6", 6), out("b0", 0, "first")])
    assert ids(b.claim(["first", "q"], 10, 30, above=4).claims) == ["b0", "a6"]
    assert ids(b.claim(["q"], 10, 30, above=4).claims) == []
    assert ids(b.claim(["q"], 10, 30, above=0).claims) == ["a4"]
    assert ids(b.claim(["q"], 10, 30).claims) == ["a0"]


def test_dead_letters_of_a_priority_come_back_to_their_queue(b: Backend) -> None:
    b.send([out("d", 6)])
    (claim,) = b.claim(["q"], 1, 30).claims
    b.dead_letter(claim, "bad")
    assert [(d.id, d.queue) for d in b.dead_letters()] == [("d", "q")]
    assert b.requeue_dead() == ["d"]
    wait_for(lambda: b.queue_length("q") == 1, 2, "the requeued message")
    assert ids(b.claim(["q"], 10, 30).claims) == ["d"]


def test_a_worker_waiting_on_a_queue_wakes_for_a_message_of_a_priority(b: Backend) -> None:
    began = time.monotonic()
    b.send([out("w", 3)])
    assert b.wait(["q"], 2.0)
    assert time.monotonic() - began < 1.0
    assert ids(b.wait_claim(["q"], 1.0, 10, 30).claims) == ["w"]


def test_purge_deletes_the_ready_messages_of_every_priority(b: Backend) -> None:
    b.send([out("a"), out("b", 3), out("c", 9), out("other", 5, "keep")])
    assert b.purge(["q"]) == 3
    assert b.queue_length("q") == 0
    assert b.claim(["q"], 10, 30).claims == []
    b.send([out("d", 3)])  # the queue's priorities still work after a purge
    assert ids(b.claim(["q", "keep"], 10, 30).claims) == ["d", "other"]
