"""The control channel (roles.Workers: send_command, commands, reply, replies) and purge."""

from __future__ import annotations

import time

from beatq.brokers import Backend
from tests.contract.conftest import Store, ids, out


def test_a_command_reaches_each_reader_once_from_its_cursor(store: Store, b: Backend) -> None:
    b.send_command(b"before")  # sent before the reader started: never read by it
    other = store.open()
    cursor, none = other.commands(None)
    assert none == []
    b.send_command(b"one")
    b.send_command(b"two")
    cursor, found = other.commands(cursor)
    assert found == [b"one", b"two"]
    assert other.commands(cursor) == (cursor, [])  # read once
    b.send_command(b"three")
    assert other.commands(cursor)[1] == [b"three"]
    # another reader keeps a cursor of its own
    late, _ = b.commands(None)
    assert b.commands(late)[1] == []


def test_the_channel_keeps_the_newest_commands(b: Backend) -> None:
    b.control_max_len = 5
    cursor, _ = b.commands(None)
    for n in range(50):
        b.send_command(str(n).encode())
    _, found = b.commands(cursor)
    assert found == [str(n).encode() for n in range(45, 50)]


def test_replies_are_kept_per_command_until_their_ttl(b: Backend) -> None:
    assert b.replies("c1") == {}
    b.reply("c1", "w1", b'{"ok": "pong"}', 30)
    b.reply("c1", "w2", b'{"ok": "pong"}', 30)
    b.reply("c2", "w1", b"other", 0.2)
    assert b.replies("c1") == {"w1": b'{"ok": "pong"}', "w2": b'{"ok": "pong"}'}
    assert b.replies("c2") == {"w1": b"other"}
    time.sleep(0.3)  # the ttl itself is what is tested
    assert b.replies("c2") == {}
    assert len(b.replies("c1")) == 2


def test_purge_deletes_the_ready_messages_of_the_queues_named(b: Backend) -> None:
    b.send([out("a1", "a"), out("a2", "a"), out("b1", "b"), out("c1", "c")])
    b.send([out("later", "a", eta=time.time() + 60)])  # delayed: kept
    held = b.claim(["c"], 10, 30).claims  # claimed: kept
    assert ids(held) == ["c1"]
    assert b.purge(["a", "b", "c", "a"]) == 3
    assert b.purge(["a", "b"]) == 0
    assert [b.queue_length(q) for q in "abc"] == [0, 0, 0]
    assert [eta_claim[1].id for eta_claim in b.scheduled()] == ["later"]
    b.release(held)
    assert ids(b.claim(["c"], 10, 30).claims) == ["c1"]
    b.send([out("a3", "a")])  # the queue works afterwards
    assert ids(b.claim(["a"], 10, 30).claims) == ["a3"]
