"""Poison headers reach the dead letters once, with the field named (issue 22, defect 3).

A header that is JSON with `v`, `id` and `task` but a field a worker cannot use (no `ct`,
`"retries": "abc"`, `"eta": "soon"`, ...) used to raise inside the worker, stay claimed
and come back after every visibility timeout, forever. messages.check_header validates
the whole header at decode: each such message is dead-lettered with a one-line reason,
nothing of it is left to come back, and the worker runs the next good task.
"""

from __future__ import annotations

import json
import uuid

import pytest

from beatq.brokers import Outgoing
from beatq.messages import MessageError, check_header, decode
from tests.conftest import scaled, stored_messages, wait_for

GOOD = {"v": 1, "task": "tests.proj.tasks.echo", "ct": "application/json", "queue": "celery"}
PAYLOAD = b'[["poison"], {}, {}]'

# (what is wrong, the header fields changed (None: removed), the field the reason names)
POISON = [
    ("no ct", {"ct": None}, "ct"),
    ("empty ct", {"ct": ""}, "ct"),
    ("retries a word", {"retries": "abc"}, "retries"),
    ("retries negative", {"retries": -1}, "retries"),
    ("retries true", {"retries": True}, "retries"),
    ("eta a word", {"eta": "soon"}, "eta"),
    ("eta infinite", {"eta": float("inf")}, "eta"),
    ("expires a word", {"expires": "x"}, "expires"),
    ("sent a list", {"sent": [1]}, "sent"),
    ("priority a word", {"priority": "high"}, "priority"),
    ("queue a number", {"queue": 5}, "queue"),
    ("parent a list", {"parent": ["a"]}, "parent"),
    ("ce a number", {"ce": 3}, "ce"),
]


def body(message_id: str, changes: dict) -> bytes:
    header = {**GOOD, "id": message_id, **changes}
    header = {k: v for k, v in header.items() if v is not None}
    return json.dumps(header).encode() + b"\n" + PAYLOAD  # NaN/Infinity: json's own spelling


@pytest.mark.parametrize(("what", "changes", "field"), POISON, ids=[p[0] for p in POISON])
def test_decode_refuses_the_header_naming_the_field(what, changes, field) -> None:
    with pytest.raises(MessageError) as caught:
        decode(body("m1", changes), None)
    reason = str(caught.value)
    assert f"header field {field!r}" in reason and "\n" not in reason, reason


def test_good_headers_pass_and_unknown_fields_are_left_alone() -> None:
    check_header({**GOOD, "id": "m", "eta": 1.5, "expires": 2, "retries": 0, "priority": 9})
    check_header({**GOOD, "id": "m", "sig": "ab" * 32, "future": {"any": "thing"}})
    message = decode(body("m2", {"eta": None, "retries": None}), ["json"])
    assert (message.args, message.retries, message.eta) == (["poison"], 0, None)


@pytest.mark.backends("redis", "sqlite")
def test_a_real_worker_dead_letters_each_poison_header_once_and_carries_on(app, start_worker):
    from tests.proj.tasks import echo

    # A short visibility timeout: a poison message left claimed would be back within it.
    worker = start_worker("-P", "prefork", "-c", "1", extra_env={"BEATQ_TEST_VISIBILITY": "2"})
    sent = {f"poison-{uuid.uuid4().hex[:8]}": (changes, field) for _, changes, field in POISON}
    app.broker.send([Outgoing("celery", mid, body(mid, c)) for mid, (c, _) in sent.items()])

    def letters():
        found = {d.id: d for d in app.broker.dead_letters(limit=1000) if d.id in sent}
        return found if len(found) == len(sent) else None

    found = wait_for(letters, 10, "every poison message in the dead letters")
    for mid, (_, field) in sent.items():
        reason = found[mid].reason
        assert f"header field {field!r}" in reason and "\n" not in reason, (mid, reason)

    assert echo.delay("after").get(timeout=scaled(10)) == "after", "the worker carries on"
    assert worker.process.poll() is None
    # Nothing of them is left in a queue or claimed, so nothing can come back.
    assert not [m for m in stored_messages(app) if m.id in sent]
    log = worker.log()
    assert all(sum(mid in line for line in log.splitlines()) == 1 for mid in sent), log
