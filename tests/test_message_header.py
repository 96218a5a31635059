"""A message's header as it goes out: the same fields whether its fixed part was encoded
for it or taken from the ones encoded before (messages._FIXED_HEADERS), and fresh ids."""

from __future__ import annotations

import json
import uuid

import pytest

from beatq import messages
from beatq.messages import Message, decode, new_id, read_header


def _sent(**fields) -> Message:
    return decode(Message(**fields).encode(), None)


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "a", "task": "t.add"},
        {"id": "b", "task": "t.add", "queue": "priority.high", "priority": 3, "retries": 2},
        {"id": "c", "task": "t.add", "parent": "p1", "root": "r1", "group": "g1"},
        {"id": "d", "task": 'odd "name" ü\n', "queue": "q\\1"},
        {"id": "e", "task": "t.add", "eta": 1732465801.5, "expires": 1732465861.25},
        {"id": "f", "task": "t.add", "expires": 1732465861.25},
    ],
)
def test_the_header_holds_every_field_sent_twice_alike(fields) -> None:
    messages._FIXED_HEADERS.clear()
    first, again = Message(**fields), Message(**fields)
    first.sent = again.sent = 1732465798.123456
    one, two = first.encode(), again.encode()  # the second finds the first's fixed part
    assert one == two
    for body in (one, two):
        header = read_header(body)
        assert header == {**first.header(), "sent": 1732465798.123456}
        assert json.loads(body.partition(b"\n")[0]) == header


def test_copies_of_a_batch_keep_their_own_id_and_arguments() -> None:
    messages._FIXED_HEADERS.clear()
    first = Message(id=new_id(), task="t.add", queue="celery", args=[1])
    bodies = [first.encode()] + [first.again([i], {"n": i}).encode() for i in range(3)]
    got = [decode(b, None) for b in bodies]
    assert [m.args for m in got] == [[1], [0], [1], [2]]
    assert [m.kwargs for m in got] == [{}, {"n": 0}, {"n": 1}, {"n": 2}]
    assert len({m.id for m in got}) == 4
    assert {m.task for m in got} == {"t.add"} and {m.queue for m in got} == {"celery"}


def test_the_fixed_parts_kept_are_bounded() -> None:
    messages._FIXED_HEADERS.clear()
    for i in range(messages._FIXED_HEADERS_MAX * 2 + 5):
        Message(id=new_id(), task="t.add", parent=f"parent-{i}").encode()
    assert 0 < len(messages._FIXED_HEADERS) <= messages._FIXED_HEADERS_MAX
    assert _sent(id="x", task="t.add", parent="parent-last").parent == "parent-last"


def test_new_ids_are_random_version_4_uuids() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:500]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize(
    "field, value",
    [
        ("task", "t.other"),
        ("retries", 4),
        ("parent", "p2"),
        ("root", "r2"),
        ("group", "g2"),
        ("queue", "other"),
        ("priority", 9),
        ("content_encoding", "zlib"),
    ],
)
def test_a_message_differing_in_one_field_gets_its_own_header(field, value) -> None:
    base = {"id": "a", "task": "t.add"}
    Message(**base).encode()
    other = Message(**{**base, "id": "b", field: value})
    other.content_type = "application/json"
    header = json.loads(other._header_json())
    assert header[{"content_encoding": "ce"}.get(field, field)] == value
    assert header["id"] == "b"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32"])
def test_a_header_is_read_as_json_reads_it_whatever_its_encoding(encoding) -> None:
    # beatq writes UTF-8 starting '{"' (read in fewer steps); anything json.loads reads
    # is read as before
    header = {"v": 1, "id": "x\ud800", "task": "t.add", "ct": "application/json"}
    head = json.dumps(header).encode(encoding, "surrogatepass")
    assert read_header(head + b"\n[[],{},{}]") == header
    with pytest.raises(messages.MessageError, match="corrupt message header"):
        read_header(b'{"v": 1, "id": "x"} trailing\n[]')


def test_ids_made_many_at_once_are_random_version_4_uuids() -> None:
    from beatq.messages import new_ids

    assert new_ids(0) == [] and len(new_ids(1)) == 1
    ids = [i for _ in range(200) for i in new_ids(100)]
    assert len(set(ids)) == len(ids) == 20_000
    for value in ids[:2000]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # every hex digit but the version's is random: each of the 16 shows at each place
    for place in [p for p in range(36) if p not in (8, 13, 14, 18, 23)]:
        seen = {value[place] for value in ids}
        assert seen == (set("89ab") if place == 19 else set("0123456789abcdef")), place


def test_a_forked_child_makes_ids_of_its_own() -> None:
    import os

    new_id()  # the pool filled in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out at once
        try:
            os.write(write, " ".join(new_id() for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [new_id() for _ in range(3)]
    assert len(child) == 3 and not set(child) & set(parent)


def test_threads_taking_ids_at_once_never_share_one() -> None:
    import threading

    taken: list[list[str]] = [[] for _ in range(4)]

    def take(into: list[str]) -> None:
        for _ in range(5_000):
            into.append(new_id())

    threads = [threading.Thread(target=take, args=(t,)) for t in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for t in taken for i in t]
    assert len(set(every)) == len(every) == 20_000
