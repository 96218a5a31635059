"""The Events role (roles.Events): the capped event stream, read from a cursor."""

from __future__ import annotations

import threading
import time

from beatq.brokers import Backend, Claim, Outgoing, ResultWrite
from tests.conftest import scaled


def data(rows: list[tuple[str, bytes]]) -> list[bytes]:
    return [d for _, d in rows]


def test_events_read_in_order_from_a_cursor(b: Backend) -> None:
    b.add_events([b"a", b"b"])
    b.add_events([b"c"])
    rows = b.read_events()
    assert data(rows) == [b"a", b"b", b"c"]
    assert data(b.read_events(after=rows[0][0])) == [b"b", b"c"]
    assert b.read_events(after=rows[-1][0]) == []
    assert data(b.read_events(count=2)) == [b"a", b"b"]
    assert data(b.recent_events(2)) == [b"b", b"c"]


def test_event_stream_is_capped_to_about_maxlen(b: Backend) -> None:
    for start in range(0, 1000, 50):
        b.add_events([str(i).encode() for i in range(start, start + 50)], maxlen=100)
    kept = data(b.read_events(count=10_000))
    # Redis trims whole stream nodes (MAXLEN ~): about maxlen, never fewer
    assert 100 <= len(kept) <= 300
    assert kept[-1] == b"999"
    assert kept == [str(i).encode() for i in range(1000 - len(kept), 1000)]


def test_a_blocked_read_wakes_on_the_next_event(b: Backend) -> None:
    b.add_events([b"old"])
    cursor = b.read_events()[-1][0]
    timer = threading.Timer(0.3, lambda: b.add_events([b"new"]))
    timer.start()
    began = time.monotonic()
    rows = b.read_events(after=cursor, timeout=5.0)
    waited = time.monotonic() - began
    timer.join()
    assert data(rows) == [b"new"]
    assert 0.2 < waited < scaled(2.0)
    began = time.monotonic()
    assert b.read_events(after=rows[-1][0], timeout=0.2) == []
    assert time.monotonic() - began >= 0.15


def test_send_and_finish_carry_events_in_the_same_call(b: Backend) -> None:
    b.send([Outgoing("q", "t1", b"body")], events=[b"sent"])
    claims = b.claim(["q"], 1, 60).claims
    assert [c.id for c in claims] == ["t1"]
    b.finish(ack=claims, results=[ResultWrite("t1", b"meta", 60)], events=[b"done", b"more"])
    assert b.get_result("t1") == b"meta"
    assert data(b.read_events()) == [b"sent", b"done", b"more"]
    b.finish(ack=[Claim("t1", "q", b"body")])  # no events: none added
    assert len(b.read_events()) == 3
