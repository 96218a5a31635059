"""The backend contract of `claim(..., ack_first=...)` (beatq/brokers/base.py): the first
message claimed is acknowledged in the claim when it is a task acknowledged at its start.

Run on memory://, sqlite:// and Redis with the fixtures of test_backend_contract.py.
"""

from __future__ import annotations

import time

import pytest

from beatq.brokers import Backend, Outgoing
from beatq.messages import Message
from tests.conftest import wait_for
from tests.test_backend_contract import b, ids, out, store

__all__ = ["b", "store"]  # the fixtures, imported so they apply here


def task_out(
    id_: str,
    task: str,
    compression: str | None = None,
    eta: float | None = None,
    **options: object,
) -> Outgoing:
    """A real task message (what `claim(..., ack_first=...)` looks into)."""
    message = Message(id_, task, [1], {}, dict(options), queue="q", eta=eta)
    return Outgoing("q", id_, message.encode("json", compression), eta)


def test_claim_acknowledges_the_first_message_of_a_task_acked_at_start(b: Backend) -> None:
    sent = [task_out("a1", "early"), task_out("a2", "early")]
    b.send(sent)
    claimed = b.claim(["q"], 2, 0.2, ack_first={"early", "other"})
    assert claimed.acked
    assert [(c.id, c.body) for c in claimed.claims] == [("a1", sent[0].body), ("a2", sent[1].body)]
    # the second is only claimed: it comes back when its claim expires, the first never
    back = wait_for(lambda: b.claim(["q"], 10, 30).claims, 3, "the expired claim")
    assert ids(back) == ["a2"]
    b.finish(ack=back)
    assert b.claim(["q"], 10, 30).claims == [] and b.queue_length("q") == 0
    # released unstarted (a worker stopping), the acknowledged message goes back to its queue
    b.release(claimed.claims[:1])
    assert [(c.id, c.body) for c in b.claim(["q"], 10, 30).claims] == [("a1", sent[0].body)]


def test_a_message_acknowledged_in_its_claim_can_still_be_dead_lettered(b: Backend) -> None:
    """A worker refuses a message (a bad signature, a corrupt payload) only once it holds
    it: one acknowledged in its claim goes to the dead letters all the same, once."""
    sent = task_out("a1", "early")
    b.send([sent])
    claimed = b.claim(["q"], 1, 30, ack_first={"early"})
    assert claimed.acked
    b.dead_letter(claimed.claims[0], "bad signature")
    b.dead_letter(claimed.claims[0], "bad signature")
    letters = b.dead_letters()
    assert [(d.id, d.queue, d.reason, d.body) for d in letters] == [
        ("a1", "q", "bad signature", sent.body)
    ]
    assert b.claim(["q"], 10, 30).claims == [] and b.queue_length("q") == 0


@pytest.mark.parametrize(
    "message, ack_first",
    [
        (task_out("m", "early"), set()),  # not asked
        (task_out("m", "late"), {"early"}),  # another task
        (task_out("m", "early", acks_late=True), {"early"}),  # acks_late given per call
        (task_out("m", "early", compression="zlib"), {"early"}),  # payload not plain JSON
        (out("m"), {"early"}),  # not a task message
    ],
    ids=["not-asked", "other-task", "acks-late-per-call", "compressed", "not-a-message"],
)
def test_claim_acknowledges_nothing_else(
    b: Backend, message: Outgoing, ack_first: set[str]
) -> None:
    b.send([message])
    claimed = b.claim(["q"], 1, 0.2, ack_first=ack_first)
    assert not claimed.acked and ids(claimed.claims) == ["m"]
    back = wait_for(lambda: b.claim(["q"], 10, 30).claims, 3, "the expired claim")
    assert [(c.id, c.body) for c in back] == [("m", message.body)]


def test_a_message_claimed_ahead_of_its_eta_is_not_acknowledged_in_the_claim(b: Backend) -> None:
    """Its worker holds it until its eta: were it acknowledged now, a worker that dies while
    it holds it would lose it."""
    message = task_out("m", "early", eta=time.time() + 5)
    b.send([message])
    claimed = b.claim(["q"], 1, 0.2, ack_first={"early"}, ahead=10)
    assert not claimed.acked and ids(claimed.claims) == ["m"]
    back = wait_for(lambda: b.claim(["q"], 10, 30).claims, 3, "the expired claim")
    assert [(c.id, c.body) for c in back] == [("m", message.body)]
