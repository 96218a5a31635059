"""taskiq broker for bench/async_peers.py: taskiq-redis's RedisStreamBroker (the one that
acknowledges, as beatq and arq do) and RedisAsyncResultBackend on BENCH_REDIS_URL, their
defaults.

Each task returns the wall-clock instant it finished, as bench/apps/async_app.py's tasks do."""

import asyncio
import os
import time

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

_url = os.environ["BENCH_REDIS_URL"]
broker = RedisStreamBroker(_url).with_result_backend(RedisAsyncResultBackend(_url))


@broker.task
async def anoop():
    return time.time()


@broker.task
async def asleep(seconds):
    await asyncio.sleep(seconds)
    return time.time()
