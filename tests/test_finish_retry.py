"""A finish whose reply is lost is retried; its callbacks still run once.

The worker retries `finish` until the broker answers. When the broker applied the first
call but the reply never came back, the retry carries the same token and does nothing,
so a link that already ran is not sent again.
"""

from __future__ import annotations

from beatq.exceptions import BrokerError
from beatq.worker.delivery import Delivery
from beatq.worker.execute import Executor


def test_a_retried_finish_does_not_send_a_link_again(app, monkeypatch) -> None:
    from tests.proj.tasks import add, echo

    broker = app.broker
    real_finish = broker.finish
    calls = []

    def finish_then_lose_the_reply(ack=(), results=(), send=(), join=None, events=(), token=None):
        real_finish(ack, results, send, join, events, token)
        if not send:
            return  # the early ack at the start
        calls.append(token)
        if len(calls) == 1:
            # meanwhile another worker takes the callback and finishes it
            callback = broker.claim(["celery"], 10, 30).claims
            assert len(callback) == 1
            real_finish(ack=callback)
            raise BrokerError("the connection dropped before the reply")

    monkeypatch.setattr(broker, "finish", finish_then_lose_the_reply)
    result = add.apply_async((2, 2), link=echo.s())
    executor = Executor(app, "test-host")
    executor.execute(Delivery(broker.claim(["celery"], 1, 30).claims[0]))

    assert len(calls) == 2 and calls[0] is not None and calls[0] == calls[1]
    assert result.get(timeout=1) == 4
    assert broker.claim(["celery"], 10, 30).claims == [], "the link was sent a second time"
