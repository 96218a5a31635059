"""Huey app for the benchmark (bench/peers.py): RedisHuey on BENCH_REDIS_URL, Huey's defaults.

One option, only when the harness sets BENCH_HUEY_NOTIFY=1 (its "best" round-trip setting):
``notify_result=True``, with which a waiting ``result.get(blocking=True)`` blocks on BLPOP
instead of polling with backoff (50 ms first sleep). The consumer and the client must agree.
Huey's periodic tasks have minute granularity: ``tick_minute`` runs at every whole minute.
"""

import os

from huey import RedisHuey, crontab

from bench.apps import stamps

huey = RedisHuey(
    "bench",
    url=os.environ["BENCH_REDIS_URL"],
    notify_result=os.environ.get("BENCH_HUEY_NOTIFY") == "1",
)


@huey.task()
def noop():
    return None  # Huey stores no result for None


@huey.task()
def noop_result():
    return 1


@huey.task()
def done():
    stamps.done()


@huey.task()
def late(eta):
    stamps.late(eta)


if os.environ.get("BENCH_TICK") == "1":

    @huey.periodic_task(crontab(minute="*"))
    def tick_minute():
        stamps.tick()
