"""SPEC §6 on every backend: `-Q` lists the queues, the first the most urgent. A message
of a less urgent queue whose eta has come is still less urgent: it goes after the ready
work of the queues named before its own, and ahead of its own queue's ready work only."""

from __future__ import annotations

import time

from beatq.brokers import Backend
from tests.contract.conftest import ids, out


def test_a_due_message_of_a_later_queue_waits_behind_the_urgent_ready_work(b: Backend) -> None:
    eta = time.time() + 0.15
    b.send([out("due-low", "low", eta=eta)])
    b.send([out("ready-low", "low")])
    b.send([out(f"high{i}", "high") for i in range(3)])
    time.sleep(max(eta - time.time(), 0) + 0.02)  # past the eta, not claimed yet
    assert ids(b.claim(["high", "low"], 2, 30).claims) == ["high0", "high1"]
    assert ids(b.claim(["high", "low"], 10, 30).claims) == ["high2", "due-low", "ready-low"]


def test_a_due_message_of_the_urgent_queue_goes_before_the_later_queues(b: Backend) -> None:
    eta = time.time() + 0.15
    b.send([out("ready-low", "low")])
    b.send([out("due-high", "high", eta=eta)])
    time.sleep(max(eta - time.time(), 0) + 0.02)
    assert ids(b.claim(["high", "low"], 1, 30).claims) == ["due-high"]
    assert ids(b.claim(["high", "low"], 1, 30).claims) == ["ready-low"]
