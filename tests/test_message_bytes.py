"""A message's bytes as they go out, pinned: what one encode writes for each set of header
fields, and that each message of an `apply_many` batch is byte for byte the message its
own fields encode to, for every option a call may give (serializers, compression,
signing, eta and expiry in the app's zone, links, headers, priorities)."""

from __future__ import annotations

import json
import zlib
from datetime import datetime, timedelta

import pytest

from beatq import Beatq, messages
from beatq import events as ev
from beatq.messages import Message, decode, read_header
from beatq.serializers import short_name
from beatq.signing import signer_for

SENT = 1732465798.123456
KEY = "key-" + "1" * 28


@pytest.mark.parametrize(
    "fields, header",
    [
        (
            {"id": "a", "task": "t.add"},
            '{"id":"a","sent":1732465798.123456,"task":"t.add","eta":null,"expires":null,'
            '"retries":0,"parent":null,"root":null,"group":null,"queue":"celery",'
            '"priority":null,"v":1,"ct":"application/json","ce":null}',
        ),
        (
            {"id": "b", "task": "t.add", "eta": 1732465801.5, "expires": 1732465861.25},
            '{"id":"b","task":"t.add","eta":1732465801.5,"expires":1732465861.25,"retries":0,'
            '"parent":null,"root":null,"group":null,"queue":"celery","priority":null,'
            '"sent":1732465798.123456,"v":1,"ct":"application/json","ce":null}',
        ),
        (
            {"id": "c", "task": "t.add", "expires": 1732465861.25, "requeued": 2},
            '{"id":"c","task":"t.add","eta":null,"expires":1732465861.25,"retries":0,'
            '"parent":null,"root":null,"group":null,"queue":"celery","priority":null,'
            '"sent":1732465798.123456,"v":1,"ct":"application/json","ce":null,"requeued":2}',
        ),
        (
            {
                "id": "d\u00fc",
                "task": 'odd "name" \u00fc\n',
                "eta": 1732465801,
                "queue": "q\\1",
                "priority": 3,
                "retries": 2,
                "parent": "p1",
                "root": "r1",
                "group": "g1",
            },
            '{"id":"d\\u00fc","task":"odd \\"name\\" \\u00fc\\n","eta":1732465801,'
            '"expires":null,"retries":2,"parent":"p1","root":"r1","group":"g1",'
            '"queue":"q\\\\1","priority":3,"sent":1732465798.123456,"v":1,'
            '"ct":"application/json","ce":null}',
        ),
    ],
)
def test_the_header_written_is_byte_for_byte_as_pinned(fields, header) -> None:
    for _ in range(2):  # the second finds what the first kept (messages._FIXED_HEADERS)
        message = Message(**fields, args=[1, "\u00fc"], kwargs={"k": None})
        message.sent = SENT
        body = message.encode()
        assert body == header.encode() + b'\n[[1,"\xc3\xbc"],{"k":null},{}]'


def test_a_compressed_signed_body_is_as_pinned() -> None:
    message = Message(id="e", task="t.add", eta=1732465801.5, args=[1], options={"x": 1})
    message.sent = SENT
    body = message.encode("json", "zlib", signer_for(KEY))
    head, _, payload = body.partition(b"\n")
    assert head.startswith(b'{"sig":"') and head[8 + 64 :].startswith(b'","id":"e","task"')
    assert head.endswith(b'"ct":"application/json","ce":"zlib"}')
    assert zlib.decompress(payload) == b'[[1],{},{"x":1}]'


def _batch_app(monkeypatch, **conf) -> tuple[Beatq, list]:
    app = Beatq("bytes", broker="memory://message-bytes")
    app.conf.update(timezone="Europe/Paris", **conf)
    sent: list = []
    monkeypatch.setattr(app.broker, "send", lambda messages, events=(): sent.extend(messages))
    return app, sent


def _encoded_alone(body: bytes, signer) -> bytes:
    """The body one message of these fields, this id and this send time encodes to."""
    message = decode(body, None)
    return message.encode(short_name(message.content_type), message.content_encoding, signer)


LONE = ((3, "\ud800 lone"), {})  # a lone surrogate: the JSON payload is written in ASCII
CALLS = [
    (1, "a"),
    ((2.5, "\u00fc"), {"n": {"deep": [1, None]}}),
    LONE,
    ([], {"only": "kwargs"}),
    (4, "d"),
]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"eta": 1732465801.5},
        {"countdown": 30, "expires": 600},
        {"eta": datetime(2031, 1, 2, 3, 4, 5, 678901), "expires": datetime(2031, 1, 2, 4)},
        {"eta": datetime(2031, 1, 2, 3, 4, 5) - timedelta(days=1), "priority": 7},
        {"queue": "other", "priority": 200, "time_limit": 5, "soft_time_limit": 2},
        {"headers": {"h": 1}, "acks_late": True, "ignore_result": True},
        {"compression": "zlib", "eta": 1732465801.5},
        {"compression": "gzip"},
        {"serializer": "pickle", "expires": 60.5},
        {"serializer": "yaml"},
        {"serializer": "msgpack", "eta": 1732465801.5},
        {"link": "t.after", "link_error": "t.failed"},
    ],
)
@pytest.mark.parametrize("signed", [False, True])
def test_each_message_of_a_batch_is_the_message_its_fields_encode_to(
    monkeypatch, options, signed
) -> None:
    if options.get("serializer") == "msgpack":
        pytest.importorskip("msgpack")
    app, sent = _batch_app(monkeypatch, **({"security_key": KEY} if signed else {}))

    @app.task(name="t.add", typing=False)
    def add(*args, **kwargs):
        return None

    @app.task(name="t.after")
    def after(*args):
        return None

    for key in ("link", "link_error"):  # a task name here stands for its signature
        if key in options:
            options = {**options, key: app.signature(options[key], (1,))}
    calls = CALLS
    if options.get("serializer") in ("yaml", "msgpack"):  # they write no lone surrogate
        calls = [c for c in CALLS if c != LONE]
    messages._FIXED_HEADERS.clear()
    results = add.apply_many(calls, **options)
    assert [r.id for r in results] == [o.id for o in sent] and len(sent) == len(calls)
    signer = app.signer
    first = decode(sent[0].body, None)
    for outgoing, call in zip(sent, calls, strict=True):
        assert outgoing.body.startswith(b'{"sig":"') == signed
        assert _encoded_alone(outgoing.body, signer) == outgoing.body
        got = decode(outgoing.body, None)
        args, kwargs = call if isinstance(call[-1], dict) and len(call) == 2 else (call, {})
        if options.get("serializer") in (None, "json", "pickle", "msgpack"):
            assert got.args == list(args) and got.kwargs == kwargs
        # everything but the id, the arguments and the send time is the first message's
        for name in ("task", "options", "queue", "eta", "expires", "retries", "priority"):
            assert getattr(got, name) == getattr(first, name), name
        assert (got.content_type, got.content_encoding) == (
            first.content_type,
            first.content_encoding,
        )
        assert (outgoing.queue, outgoing.eta, outgoing.priority) == (
            sent[0].queue,
            sent[0].eta,
            sent[0].priority,
        )
        assert outgoing.ack_at_claim == sent[0].ack_at_claim
    assert len({o.id for o in sent}) == len(sent)


def test_a_batch_sends_what_the_same_calls_sent_one_by_one_send(monkeypatch) -> None:
    app, sent = _batch_app(monkeypatch)

    @app.task(name="t.add")
    def add(x, y=0):
        return None

    options = {"eta": 1732465801.5, "expires": 7200, "priority": 3, "headers": {"h": "v"}}
    add.apply_many([(1,), ((2,), {"y": 3})], **options)
    add.apply_async((1,), **options)
    add.apply_async((2,), {"y": 3}, **options)
    batch, alone = sent[:2], sent[2:]
    for one, two in zip(batch, alone, strict=True):
        a, b = read_header(one.body), read_header(two.body)
        assert a.pop("id") != b.pop("id")
        assert abs(a.pop("sent") - b.pop("sent")) < 5
        assert abs(a.pop("expires") - b.pop("expires")) < 5  # relative: from each send
        assert a == b
        assert one.body.partition(b"\n")[2] == two.body.partition(b"\n")[2]
        assert (one.queue, one.eta, one.ack_at_claim, one.priority) == (
            two.queue,
            two.eta,
            two.ack_at_claim,
            two.priority,
        )


def test_the_task_sent_events_of_a_batch_are_each_messages_own(monkeypatch) -> None:
    app = Beatq("bytes", broker="memory://message-bytes-events")
    app.conf.update(task_send_sent_event=True)
    sent: list = []
    events: list = []

    def send(messages, events_=()):
        sent.extend(messages)
        events.extend(events_)

    monkeypatch.setattr(app.broker, "send", send)

    @app.task(name="t.add")
    def add(x, y=0):
        return None

    add.apply_many([(1,), ((2,), {"y": 3}), (4,)], eta=1732465801.5)
    assert len(events) == len(sent) == 3
    for outgoing, event in zip(sent, events, strict=True):
        message = decode(outgoing.body, None)
        assert json.loads(event) == json.loads(
            ev.encode(ev.TASK_SENT, ev.sent_fields(message), message.sent)
        )


class _Ticking:
    """Encodes (JSON, as an iterable) to what it holds the n-th time it is read."""

    def __init__(self) -> None:
        self.reads = 0

    def __iter__(self):
        self.reads += 1
        return iter([self.reads])


def test_calls_given_as_one_object_encode_as_each_call_would(monkeypatch) -> None:
    app, sent = _batch_app(monkeypatch)

    @app.task(name="t.add", typing=False)
    def add(*args, **kwargs):
        return None

    call = (1.5, "x", None, True)  # scalars: encoded once for every copy
    add.apply_many([call] * 4 + [(call, {"k": 2})] * 2, eta=1732465801.5)
    payloads = [o.body.partition(b"\n")[2] for o in sent]
    assert (
        payloads == [b'[[1.5,"x",null,true],{},{}]'] * 4 + [b'[[1.5,"x",null,true],{"k":2},{}]'] * 2
    )
    sent.clear()
    ticking = (_Ticking(),)  # what it holds differs each time: encoded for each call
    add.apply_many([ticking] * 3)
    assert [o.body.partition(b"\n")[2] for o in sent] == [
        b"[[[1]],{},{}]",
        b"[[[2]],{},{}]",
        b"[[[3]],{},{}]",
    ]


def test_apply_many_checks_each_call_with_the_tasks_own_check_call(monkeypatch) -> None:
    app, sent = _batch_app(monkeypatch)
    checked: list = []

    class Checked(app.Task):
        def check_call(self, args=None, kwargs=None):
            checked.append((tuple(args), dict(kwargs or {})))
            super().check_call(args, kwargs)

    @app.task(name="t.add", base=Checked)
    def add(x, y=0):
        return None

    add.apply_many([(1,), ((2,), {"y": 3})])
    assert checked == [((1,), {}), ((2,), {"y": 3})] and len(sent) == 2
    with pytest.raises(TypeError, match="cannot take these arguments"):
        add.apply_many([(1,), (1, 2, 3)])

    @app.task(name="t.plain")
    def plain(x, y=0):
        return None

    bad_calls = ([(1, 2, 3)], [((), {"z": 1})], [((1,), {"z": 1})], [()], [iter([])])
    for bad in bad_calls:
        with pytest.raises(TypeError, match="task 't.plain' cannot take these arguments"):
            plain.apply_many(bad)
    sent.clear()
    plain.apply_many([(1,), [1, 2], ((), {"x": 1}), iter([5])])
    assert len(sent) == 4


def test_apply_many_makes_its_handles_of_result_cls(monkeypatch) -> None:
    from beatq.result import AsyncResult

    class Mine(AsyncResult):
        pass

    app, sent = _batch_app(monkeypatch)

    @app.task(name="t.add")
    def add(x):
        return None

    results = add.apply_many([(1,), (2,), (3,)], result_cls=Mine)
    assert [type(r) for r in results] == [Mine] * 3
    assert [r.id for r in results] == [o.id for o in sent]
    assert all("result_cls" not in decode(o.body, None).options for o in sent)
