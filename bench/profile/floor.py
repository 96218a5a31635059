"""Floors on this machine: a bare redis-py round trip, and each piece of a delay() call.

.venv/bin/python bench/profile/floor.py redis://127.0.0.1:6391/5
"""

import statistics
import sys
import time

import redis

from beatq import Beatq


def rate(fn, n=20_000, reps=3):
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append(n / (time.perf_counter() - t0))
    return f"{statistics.median(out):>9,.0f}/s [{min(out):,.0f}-{max(out):,.0f}]"


url = sys.argv[1]
r = redis.Redis.from_url(url)
r.flushdb()
print("PING            ", rate(r.ping))
print("LPUSH           ", rate(lambda: r.lpush("x", b"y")))
r.delete("x")
app = Beatq("floor", broker=url)


@app.task(ignore_result=True)
def noop():
    return None


print("build_message   ", rate(lambda: app.build_message(noop.name, (), {}, noop)))
print("delay()         ", rate(noop.delay))
