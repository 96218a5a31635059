"""arq worker settings for the benchmark (bench/peers.py): Redis on BENCH_REDIS_URL, arq's
defaults (max_jobs 10, poll_delay 0.5 s, results kept 1 h).

Only when the harness sets them:
    BENCH_ARQ_POLL    -> poll_delay (its "best" setting: 0.01 s instead of 0.5 s)
    BENCH_ARQ_JOBS    -> max_jobs (tried on 2 cores: 100 instead of 10)
    BENCH_TICK=1      -> a cron job every second (second=0..59), for the beat precision phase
"""

import os

from arq import cron
from arq.connections import RedisSettings

from bench.apps import stamps


async def noop(ctx):
    return None


async def noop_result(ctx):
    return 1


async def done(ctx):
    stamps.done()


async def late(ctx, eta):
    stamps.late(eta)


async def tick(ctx):
    stamps.tick()


class WorkerSettings:
    functions = [noop, noop_result, done, late]
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
    if os.environ.get("BENCH_ARQ_POLL"):
        poll_delay = float(os.environ["BENCH_ARQ_POLL"])
    if os.environ.get("BENCH_ARQ_JOBS"):
        max_jobs = int(os.environ["BENCH_ARQ_JOBS"])
    if os.environ.get("BENCH_TICK") == "1":
        cron_jobs = [cron(tick, second=set(range(60)))]
