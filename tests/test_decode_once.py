"""A claimed message is decoded once in the process that runs it (worker/delivery.py).

The finish of a task may acknowledge the next one (when that one is acknowledged as it
starts), which means reading the next message before it runs; the Delivery keeps what was
read, so running it decodes nothing again. In process, on the test's store, with the
executor a solo pool or a prefork child runs.
"""

from __future__ import annotations

from collections import Counter

import pytest

from beatq import messages
from beatq.brokers import Outgoing
from beatq.worker.delivery import Delivery
from beatq.worker.execute import Executor
from tests.conftest import stored_messages

pytestmark = pytest.mark.backends("redis", "sqlite", "memory")


def test_the_next_message_read_for_its_acknowledgement_is_not_decoded_again(
    app, monkeypatch
) -> None:
    from tests.proj.tasks import add

    first, second = add.delay(1, 2), add.delay(3, 4)
    claims = app.broker.claim(["celery"], 2, 30).claims
    assert [c.id for c in claims] == [first.id, second.id]
    decoded: Counter[str] = Counter()
    decode = messages.decode

    def counting(body: bytes, accept: list[str] | None) -> messages.Message:
        message = decode(body, accept)
        decoded[message.id] += 1
        return message

    monkeypatch.setattr(messages, "decode", counting)
    executor = Executor(app, "test-host")
    now, then = Delivery(claims[0]), Delivery(claims[1])
    outcome = executor.execute(now, then)
    assert outcome.state == "SUCCESS" and outcome.then_acked  # `then` was read: decoded
    then.acked = True
    assert executor.execute(then).state == "SUCCESS"
    assert decoded == {first.id: 1, second.id: 1}
    assert (first.get(timeout=5), second.get(timeout=5)) == (3, 7)
    assert stored_messages(app) == [], "both acknowledged, none left claimed"


def test_a_corrupt_message_read_ahead_is_dead_lettered_when_its_turn_comes(app) -> None:
    """Reading the next message for its acknowledgement never dead-letters it, nor
    acknowledges it: that happens once, when it is run."""
    from tests.proj.tasks import add

    ok = add.delay(1, 1)
    app.broker.send([Outgoing("celery", "bad", b"not a message", None)])
    claims = app.broker.claim(["celery"], 2, 30).claims
    assert [c.id for c in claims] == [ok.id, "bad"]
    executor = Executor(app, "test-host")
    now, then = Delivery(claims[0]), Delivery(claims[1])
    outcome = executor.execute(now, then)
    assert outcome.state == "SUCCESS" and not outcome.then_acked
    assert app.broker.dead_letters() == []
    assert executor.execute(then).state == "DEAD_LETTERED"
    assert [d.id for d in app.broker.dead_letters()] == ["bad"]
