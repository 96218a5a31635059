"""beatq app for bench/async_tasks.py: broker on BENCH_BROKER_URL (Redis or SQLite).

Each task returns the wall-clock instant it finished, so the bench reads the drain's span
and each task's latency from the results alone."""

import asyncio
import os
import time

from beatq import Beatq

app = Beatq("bench_async", broker=os.environ["BENCH_BROKER_URL"])


@app.task
async def anoop():
    return time.time()


@app.task
def noop():
    return time.time()


@app.task
async def asleep(seconds):
    await asyncio.sleep(seconds)
    return time.time()
