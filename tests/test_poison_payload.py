"""Poison payload options reach the dead letters once, with the option named.

A message whose header is good but whose payload options a worker cannot use (`"link": 5`,
`"time_limit": "abc"`, ...) used to raise after the task ran (or as it started), stay
claimed and run again after every visibility timeout, forever. messages.check_options
validates them at decode, as check_header does the header; whatever a worker still fails
on with a message (a link whose arguments are not a list) dead-letters it with the error.
"""

from __future__ import annotations

import json
import uuid

import pytest

from beatq.brokers import Outgoing
from beatq.messages import MessageError, decode
from tests.conftest import wait_for

HEADER = {"v": 1, "task": "tests.proj.tasks.echo", "ct": "application/json", "queue": "celery"}

# (what is wrong, the payload options, the option the reason names)
POISON = [
    ("time_limit a word", {"time_limit": "abc"}, "time_limit"),
    ("soft_time_limit negative", {"soft_time_limit": -1}, "soft_time_limit"),
    ("link a number", {"link": 5}, "link"),
    ("link_error a word", {"link_error": "x"}, "link_error"),
    ("link a list of words", {"link": ["x"]}, "link"),
    ("chain an object", {"chain": {"a": 1}}, "chain"),
    ("chord a word", {"chord": "x"}, "chord"),
    ("chord without a body", {"chord": {"id": "g", "size": 2}}, "chord"),
    ("acks_late a word", {"acks_late": "no"}, "acks_late"),
    ("headers a list", {"headers": [1]}, "headers"),
    ("group_id a number", {"group_id": 7}, "group_id"),
]


def body(message_id: str, options: dict) -> bytes:
    header = {**HEADER, "id": message_id}
    return json.dumps(header).encode() + b"\n" + json.dumps([["poison"], {}, options]).encode()


@pytest.mark.parametrize(("what", "options", "name"), POISON, ids=[p[0] for p in POISON])
def test_decode_refuses_the_payload_naming_the_option(what, options, name) -> None:
    with pytest.raises(MessageError) as caught:
        decode(body("m1", options), None)
    reason = str(caught.value)
    assert f"payload option {name!r}" in reason and "\n" not in reason, reason


def test_the_options_beatq_sends_pass(app) -> None:
    from tests.proj.tasks import add, echo

    link = echo.s("done")
    _, sent = app.build_message(
        add.name,
        [1, 2],
        {},
        link=link,
        link_error=[echo.s("err")],
        time_limit=5,
        soft_time_limit=2.5,
        acks_late=True,
        headers={"x": 1},
    )
    message = decode(sent, None)
    assert message.options["time_limit"] == 5 and message.options["acks_late"] is True
    assert [s["task"] for s in message.options["link"]] == [echo.name]


def test_a_client_refuses_a_flag_that_is_not_true_or_false(app) -> None:
    from tests.proj.tasks import echo

    with pytest.raises(TypeError, match=r"ignore_result= takes True or False, not 'yes'"):
        echo.apply_async(("x",), ignore_result="yes")


@pytest.mark.backends("redis", "sqlite")
def test_a_real_worker_dead_letters_each_poison_payload_once_and_carries_on(app, start_worker):
    from tests.proj.tasks import echo

    # A short visibility timeout: a poison message left claimed would be back within it.
    start_worker("-P", "prefork", "-c", "1", extra_env={"BEATQ_TEST_VISIBILITY": "2"})
    sent = {f"poison-{uuid.uuid4().hex[:8]}": (o, name) for _, o, name in POISON}
    # passes decode, fails as the callback is built: caught by the worker's last resort
    deep = f"deep-{uuid.uuid4().hex[:8]}"
    link = {"task": "tests.proj.tasks.echo", "args": 5, "kwargs": {}, "options": {}}
    outgoing = [Outgoing("celery", mid, body(mid, o)) for mid, (o, _) in sent.items()]
    app.broker.send([*outgoing, Outgoing("celery", deep, body(deep, {"link": [link]}))])
    assert echo.delay("after").get(timeout=20) == "after"  # the worker went on

    def letters():
        found = {d.id: d for d in app.broker.dead_letters(limit=1000)}
        return found if all(mid in found for mid in [*sent, deep]) else None

    found = wait_for(letters, 10, "every poison message in the dead letters")
    for mid, (_, name) in sent.items():
        reason = found[mid].reason
        assert f"payload option {name!r}" in reason and "\n" not in reason, (mid, reason)
        assert app.AsyncResult(mid).state == "PENDING"  # refused before it ran
    assert "the worker failed on this message: TypeError" in found[deep].reason
    # none came back to be run again: each is one dead letter and no queued message
    assert app.broker.queue_length("celery") == 0
