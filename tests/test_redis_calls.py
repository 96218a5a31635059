"""How the Redis backend waits for replies (beatq/brokers/redis_calls.py): a short spin
that never mixes replies up, gives way to sleeping when replies are slow, and the beat's
`prime` (a PING sent ahead, its reply read by the next call).
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import redis

from beatq import Beatq
from beatq.brokers.redis_calls import MISSES, SPIN, Calls
from tests.conftest import free_port

# A script that keeps the server busy for `ARGV[1]` milliseconds before it answers: a
# server that is slow to reply, without any sleeping on the test's side.
SLOW = """
local t = redis.call('TIME')
local stop = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1]) * 1000
repeat
  t = redis.call('TIME')
until tonumber(t[1]) * 1000000 + tonumber(t[2]) >= stop
return ARGV[2]
"""


@pytest.fixture
def calls(redis_url: str):
    client = redis.Redis.from_url(redis_url)
    yield Calls(client)
    client.close()


def test_every_thread_reads_its_own_replies_while_one_spins(calls: Calls) -> None:
    out: dict[int, list[bytes]] = {}

    def run(n: int) -> None:
        out[n] = [calls.command("ECHO", f"{n}:{i}") for i in range(300)]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {n: [f"{n}:{i}".encode() for i in range(300)] for n in range(8)}
    assert calls.waiting == []  # every call that waited has left the count


def test_pipelines_and_commands_keep_their_replies_in_order(calls: Calls) -> None:
    for i in range(50):
        assert calls.pipeline([("ECHO", f"a{i}"), ("ECHO", f"b{i}")]) == [
            f"a{i}".encode(),
            f"b{i}".encode(),
        ]
        assert calls.command("ECHO", f"c{i}") == f"c{i}".encode()


def test_replies_slower_than_the_spin_stop_the_spinning(calls: Calls, redis_url: str) -> None:
    """A slow (or distant) server: after MISSES replies that missed the spin, the thread
    sleeps on its calls. Spinning on every one of these 60 calls would cost at least
    60 × SPIN of CPU (30 ms) more than calls that never spin; backing off costs the few
    spins before it. The calls' own CPU (parsing, waking) is measured, not assumed: it
    differs from machine to machine by more than the spins do."""
    slow_ms = SPIN * 1000 * 6
    client = redis.Redis.from_url(redis_url)
    sleeper = Calls(client, spin=0)

    def cpu_of_60(c: Calls) -> float:
        assert c.command("EVAL", SLOW, 0, slow_ms, "warm") == b"warm"
        cpu = time.thread_time()
        for i in range(60):
            assert c.command("EVAL", SLOW, 0, slow_ms, i) == str(i).encode()
        return time.thread_time() - cpu

    try:
        # alternated, best of three each: a busy neighbour inflates a single run
        spinning, sleeping = [], []
        for _ in range(3):
            spinning.append(cpu_of_60(calls))
            sleeping.append(cpu_of_60(sleeper))
            calls.local.sleep_until = 0.0  # the next round starts spinning again
    finally:
        client.close()
    extra = min(spinning) - min(sleeping)
    assert extra < SPIN * (MISSES + 1) + 0.005, (
        f"spinning calls used {extra * 1000:.1f} ms more CPU than sleeping ones "
        f"({min(spinning) * 1000:.1f} against {min(sleeping) * 1000:.1f} ms)"
    )


def test_a_blocking_call_keeps_the_spin_for_later_calls(calls: Calls) -> None:
    """A BLMOVE that waits on the server is not a slow reply: it does not spin (that
    would burn CPU for nothing) and does not count as a missed spin."""
    for _ in range(MISSES + 1):
        value = calls.command("BLMOVE", "beatq-test:none", "x", "RIGHT", "LEFT", 0.1, blocking=True)
        assert value is None
    assert (calls.local.misses, calls.local.sleep_until) == (0, 0.0)


def test_a_primed_connection_gives_each_call_its_own_reply(calls: Calls) -> None:
    calls.prime()
    calls.prime()  # one PING at most is outstanding
    assert calls.command("ECHO", "first") == b"first"
    calls.prime()
    assert calls.pipeline([("ECHO", "a"), ("ECHO", "b")]) == [b"a", b"b"]
    calls.prime()
    value = calls.command("BLMOVE", "beatq-test:none", "x", "RIGHT", "LEFT", 0.05, blocking=True)
    assert value is None
    assert calls.command("ECHO", "after") == b"after"


def test_a_prime_lost_with_its_socket_is_not_waited_for(redis_url: str) -> None:
    """The connection is closed and opened again between the prime and the call (as
    redis-py does on its own when a health check fails): the call answers at once with
    its own reply instead of taking it for the lost PONG and waiting for the next."""
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    calls = Calls(client)
    calls.command("PING")
    calls.prime()
    calls.local.conn.disconnect()
    started = time.monotonic()
    assert calls.command("ECHO", "again") == b"again"
    assert time.monotonic() - started < 1.0
    assert calls.command("ECHO", "then") == b"then"
    client.close()


def test_a_prime_survives_the_server_closing_the_connection(calls: Calls, redis_url: str) -> None:
    calls.command("CLIENT", "SETNAME", "beatq-test-primed")
    calls.prime()
    admin = redis.Redis.from_url(redis_url)
    for client in admin.client_list():
        if client.get("name") == "beatq-test-primed":
            admin.client_kill_filter(_id=client["id"])
    admin.close()
    assert calls.command("ECHO", "again") == b"again"
    assert calls.command("ECHO", "then") == b"then"


def test_prime_does_not_raise_when_the_server_is_gone() -> None:
    client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    calls = Calls(client)
    calls.prime()  # nothing listens there: the call that follows meets the error
    with pytest.raises(redis.ConnectionError):
        calls.command("PING")
    client.close()


def test_the_transport_option_sets_or_turns_off_the_spin(redis_url: str) -> None:
    default = Beatq("spin-default", broker=redis_url)
    off = Beatq("spin-off", broker=redis_url, broker_transport_options={"reply_spin": 0})
    try:
        assert default.broker.calls.spin == SPIN
        assert off.broker.calls.spin == 0.0
        assert off.broker.calls.command("ECHO", "x") == b"x"
    finally:
        default.close()
        off.close()


def test_a_forked_child_starts_with_no_calls_in_flight(calls: Calls) -> None:
    """A fork taken while another thread awaits a reply (the prefork pool spawning a
    child beside its collector thread): the child has no such thread, so its calls spin."""
    calls.command("PING")
    calls.waiting.append(None)  # as if another thread were awaiting its reply now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, str(len(calls.waiting)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    calls.waiting.pop()
    assert os.read(read, 10) == b"0"
    os.close(read)
    os.close(write)


def test_every_argument_kind_is_sent_as_redis_py_would_send_it(calls: Calls) -> None:
    # hiredis packs str, bytes, int, float (as repr) and memoryview; a bytearray goes to
    # redis-py's packer; what redis-py refuses is still refused with its own error
    values = [b"\x00\xff", 7, 2**70, 1733560000.1234567, 0.1, memoryview(b"mv")]
    assert calls.command("ECHO", "é") == "é".encode()
    assert calls.pipeline([("ECHO", v) for v in values]) == [
        b"\x00\xff",
        b"7",
        str(2**70).encode(),
        b"1733560000.1234567",
        b"0.1",
        b"mv",
    ]
    assert calls.command("ECHO", bytearray(b"ba")) == b"ba"
    calls.command("SET", "k", 1733560000.1234567)
    assert float(calls.command("GET", "k")) == 1733560000.1234567
    with pytest.raises(redis.DataError):
        calls.command("ECHO", None)
    assert calls.command("ECHO", "still in step") == b"still in step"
