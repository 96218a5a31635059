"""arq worker settings for bench/async_peers.py: Redis on BENCH_REDIS_URL, arq's defaults
(poll_delay 0.5 s, results kept 1 h) but max_jobs from BENCH_ARQ_JOBS (beatq's -c), and its
log at WARNING, as beatq's and taskiq's workers are run (arq's CLI logs two INFO lines per
job and has no option to log less).

Each job returns the wall-clock instant it finished, as bench/apps/async_app.py's tasks do."""

import asyncio
import logging
import os
import time

from arq.connections import RedisSettings


async def anoop(ctx):
    return time.time()


async def asleep(ctx, seconds):
    await asyncio.sleep(seconds)
    return time.time()


async def quiet(ctx):
    logging.getLogger("arq").setLevel(logging.WARNING)


class WorkerSettings:
    functions = [anoop, asleep]
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
    max_jobs = int(os.environ["BENCH_ARQ_JOBS"])
    on_startup = quiet
