"""Dramatiq app for the benchmark (bench/peers.py): RedisBroker on BENCH_REDIS_URL with
Dramatiq's default middleware, plus the Results middleware (Redis backend, same database)
for the round trip, which only ``noop_result`` uses (store_results=True)."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from bench.apps import stamps

url = os.environ["BENCH_REDIS_URL"]
broker = RedisBroker(url=url)
broker.add_middleware(Results(backend=RedisBackend(url=url)))
dramatiq.set_broker(broker)


@dramatiq.actor
def noop():
    return None


@dramatiq.actor(store_results=True)
def noop_result():
    return 1


@dramatiq.actor
def done():
    stamps.done()


@dramatiq.actor
def late(eta):
    stamps.late(eta)
