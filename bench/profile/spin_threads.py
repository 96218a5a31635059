"""`delay()` per second from 1, 2, 4 and 8 threads of one process, with the reply spin on
and off (broker_transport_options reply_spin), 3 s per cell; and the first PING after an
idle pause against the next one (what the beat's prime is for).

    bench/.venv/bin/python bench/profile/spin_threads.py URL    (URL: a Redis db it may flush)
"""

import statistics
import sys
import threading
import time

import redis

from beatq import Beatq
from beatq.brokers.redis_calls import SPIN, Calls

url = sys.argv[1]
redis.Redis.from_url(url).flushdb()


def rate(spin: float, threads: int, seconds: float = 3.0) -> float:
    app = Beatq("spin", broker=url, broker_transport_options={"reply_spin": spin})

    @app.task(ignore_result=True)
    def noop():
        return None

    noop.delay()
    counts = [0] * threads
    stop = threading.Event()

    def run(i: int) -> None:
        while not stop.is_set():
            noop.delay()
            counts[i] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    app.close()
    return sum(counts) / seconds


for n in (1, 2, 4, 8):
    off, on = rate(0.0, n), rate(SPIN, n)
    print(f"{n} thread(s): spin off {off:>8,.0f}/s   spin on {on:>8,.0f}/s")

calls = Calls(redis.Redis.from_url(url))
calls.command("PING")
for idle in (0.0, 0.01, 0.1, 1.0):
    first, second = [], []
    for _ in range(8):
        time.sleep(idle)
        t0 = time.perf_counter()
        calls.command("PING")
        t1 = time.perf_counter()
        calls.command("PING")
        first.append(t1 - t0)
        second.append(time.perf_counter() - t1)
    print(
        f"after {idle:>4} s idle: first PING {statistics.median(first) * 1e6:4.0f} µs,"
        f" next {statistics.median(second) * 1e6:4.0f} µs"
    )
redis.Redis.from_url(url).flushdb()
