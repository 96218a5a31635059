"""The delivery property stored beside a message's body (`Outgoing.ack_at_claim`), and the
claim that applies it (`Delivery.claim(..., ack_first=True)`): the first message claimed is
acknowledged in the claim when its sender said it is acknowledged as it starts. No store
reads a body to decide: the sender's word (here a real app's `outgoing`) is all.
"""

from __future__ import annotations

import time
import uuid

import pytest

from beatq import Beatq
from beatq.brokers import Backend, Outgoing
from tests.conftest import wait_for
from tests.contract.conftest import ids, out


@pytest.fixture(scope="module")
def sender() -> Beatq:
    """The app whose messages are sent: it knows tasks `early` (acknowledged as it starts),
    `late` (acks_late) and `tracked` (stores STARTED)."""
    app = Beatq("sender", broker=f"memory://sender-{uuid.uuid4().hex}")
    app.task(name="early")(lambda x: x)
    app.task(name="late", acks_late=True)(lambda x: x)
    app.task(name="tracked", track_started=True)(lambda x: x)
    return app


def task_out(
    sender: Beatq,
    id_: str,
    task: str,
    compression: str | None = None,
    eta: float | None = None,
    **options: object,
) -> Outgoing:
    """A real task message, as the sender hands it to the broker."""
    message, body = sender.build_message(
        task, [1], {}, task_id=id_, queue="q", eta=eta, compression=compression, **options
    )
    return sender.outgoing(message, body)


def test_claim_acknowledges_the_first_message_of_a_task_acked_at_start(
    b: Backend, sender: Beatq
) -> None:
    sent = [task_out(sender, "a1", "early"), task_out(sender, "a2", "early")]
    assert all(m.ack_at_claim for m in sent)
    b.send(sent)
    claimed = b.claim(["q"], 2, 0.2, ack_first=True)
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


def test_a_compressed_message_is_acknowledged_in_the_claim_too(b: Backend, sender: Beatq) -> None:
    """No store reads the body: how it is encoded does not matter."""
    b.send([task_out(sender, "z", "early", compression="zlib")])
    claimed = b.claim(["q"], 1, 0.2, ack_first=True)
    assert claimed.acked and ids(claimed.claims) == ["z"]


@pytest.mark.parametrize(
    "task, options, ack_first",
    [
        ("early", {}, False),  # not asked
        ("late", {}, True),  # acks_late in the task's definition
        ("early", {"acks_late": True}, True),  # acks_late given per call
        ("tracked", {}, True),  # its STARTED state goes with its acknowledgement
        ("unknown", {}, True),  # a task the sender does not know: its worker decides
        (None, {}, True),  # not a task message at all
    ],
    ids=["not-asked", "late-task", "acks-late-per-call", "track-started", "unknown", "raw"],
)
def test_claim_acknowledges_nothing_else(
    b: Backend, sender: Beatq, task: str | None, options: dict[str, object], ack_first: bool
) -> None:
    message = out("m") if task is None else task_out(sender, "m", task, **options)
    b.send([message])
    claimed = b.claim(["q"], 1, 0.2, ack_first=ack_first)
    assert not claimed.acked and ids(claimed.claims) == ["m"]
    back = wait_for(lambda: b.claim(["q"], 10, 30).claims, 3, "the expired claim")
    assert [(c.id, c.body) for c in back] == [("m", message.body)]


def test_a_message_claimed_ahead_of_its_eta_is_not_acknowledged_in_the_claim(
    b: Backend, sender: Beatq
) -> None:
    """Its worker holds it until its eta: were it acknowledged now, a worker that dies while
    it holds it would lose it."""
    message = task_out(sender, "m", "early", eta=time.time() + 5)
    b.send([message])
    claimed = b.claim(["q"], 1, 0.2, ack_first=True, ahead=10)
    assert not claimed.acked and ids(claimed.claims) == ["m"]
    back = wait_for(lambda: b.claim(["q"], 10, 30).claims, 3, "the expired claim")
    assert [(c.id, c.body) for c in back] == [("m", message.body)]


def test_a_message_made_ready_ahead_of_its_eta_stays_unacknowledged_in_later_claims(
    b: Backend, sender: Beatq
) -> None:
    """Made ready early by one claim (`ahead`) and left in its queue, it is taken by the next
    claim still before its eta: that claim does not acknowledge it either."""
    eta = time.time() + 5
    b.send([task_out(sender, "m1", "early", eta=eta), task_out(sender, "m2", "early", eta=eta)])
    first = b.claim(["q"], 1, 30, ack_first=True, ahead=10)
    assert not first.acked and ids(first.claims) == ["m1"]
    second = b.claim(["q"], 1, 0.2, ack_first=True)
    assert not second.acked and ids(second.claims) == ["m2"]
    back = wait_for(lambda: b.claim(["q"], 10, 30).claims, 3, "the expired claim")
    assert ids(back) == ["m2"]


def test_a_beat_run_sent_ahead_is_not_acknowledged_in_the_claim(b: Backend, sender: Beatq) -> None:
    """A run sent ready before its instant, its eta in its body only (`held`)."""
    message, body = sender.build_message("early", [1], {}, queue="q", eta=time.time() + 5)
    b.send([sender.outgoing(message, body, held=True)])
    claimed = b.claim(["q"], 1, 0.2, ack_first=True)
    assert not claimed.acked and ids(claimed.claims) == [message.id]


def test_a_message_acknowledged_in_its_claim_can_still_be_dead_lettered(
    b: Backend, sender: Beatq
) -> None:
    """Its worker finds it cannot run it (an unknown task, a content type it refuses): the
    message goes to the dead letters, never lost."""
    message = task_out(sender, "m", "early")
    b.send([message])
    claimed = b.claim(["q"], 1, 30, ack_first=True)
    assert claimed.acked
    b.dead_letter(claimed.claims[0], "unknown task")
    assert [(d.id, d.reason, d.body) for d in b.dead_letters()] == [
        ("m", "unknown task", message.body)
    ]
    # requeued, it is acknowledged by its worker, not in a claim
    assert b.requeue_dead() == ["m"]
    again = b.claim(["q"], 1, 0.2, ack_first=True)
    assert not again.acked and [(c.id, c.body) for c in again.claims] == [("m", message.body)]


def test_a_message_refused_after_its_claim_acknowledged_it_is_dead_lettered_once(
    b: Backend, sender: Beatq
) -> None:
    """A worker refuses a message (a bad signature, a corrupt payload) only once it holds
    it: one acknowledged in its claim goes to the dead letters all the same, once."""
    sent = task_out(sender, "a1", "early")
    b.send([sent])
    claimed = b.claim(["q"], 1, 30, ack_first=True)
    assert claimed.acked
    b.dead_letter(claimed.claims[0], "bad signature")
    b.dead_letter(claimed.claims[0], "bad signature")
    letters = b.dead_letters()
    assert [(d.id, d.queue, d.reason, d.body) for d in letters] == [
        ("a1", "q", "bad signature", sent.body)
    ]
    assert b.claim(["q"], 10, 30).claims == [] and b.queue_length("q") == 0
