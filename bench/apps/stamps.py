"""What the benchmark's tasks record, the same way for every system.

A task never talks to the harness except through these helpers, which write to the system's
own Redis database (BENCH_REDIS_URL):

    done()          the drain sentinel: SET bench:done <time.time()>
    late(eta)       append time.time() - eta to the list bench:late (ETA lateness), buffered
                    (RQ: at once, see late()):
                    a thread flushes every 50 ms (RPUSH of many values in one call), so the
                    recording costs the task ~1 µs, not a round trip
    traced(eta)     as late(eta), to the list bench:trace as "eta start pid" (bench/eta.py
                    --trace: which task of a burst started when, in which process)
    tick(label)     append time.time() to bench:ticks at once (one run per second at most)

Buffers are per process (forked children start their own flusher) and flushed at exit.
"""

from __future__ import annotations

import atexit
import os
import threading
import time

import redis

_client: redis.Redis | None = None
_pid = 0
_buf: list[str] = []
_traces: list[str] = []
_lock = threading.Lock()
FLUSH_EVERY = 0.05


def client() -> redis.Redis:
    global _client, _pid
    if _client is None or _pid != os.getpid():
        _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        _pid = os.getpid()
        _buf.clear()
        _traces.clear()
        threading.Thread(target=_flusher, name="bench-stamps", daemon=True).start()
        atexit.register(_flush)
    return _client


def _flush() -> None:
    with _lock:
        values, traces = _buf[:], _traces[:]
        _buf.clear()
        _traces.clear()
    if values and _client is not None:
        _client.rpush("bench:late", *values)
    if traces and _client is not None:
        _client.rpush("bench:trace", *traces)


def _flusher() -> None:
    while True:
        time.sleep(FLUSH_EVERY)
        _flush()


def done() -> None:
    client().set("bench:done", repr(time.time()))


def late(eta: float, at_once: bool = False) -> None:
    """Record run - eta; ``at_once`` writes it now (RQ's default worker runs each job in a
    forked child that leaves with os._exit, before any buffer is flushed)."""
    now = time.time()
    if at_once:
        client().rpush("bench:late", repr(now - eta))
        return
    client()
    with _lock:
        _buf.append(repr(now - eta))


def traced(eta: float) -> None:
    now = time.time()
    client()
    with _lock:
        _buf.append(repr(now - eta))
        _traces.append(f"{eta!r} {now!r} {os.getpid()}")


def tick() -> None:
    client().rpush("bench:ticks", repr(time.time()))
