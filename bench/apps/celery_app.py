"""Celery peer app for the benchmark: default settings, broker and backend on BENCH_REDIS_URL.

Settings that differ from Celery's defaults: only ``broker_connection_retry_on_startup``
(set to its current default explicitly, to silence the deprecation warning).
Everything that affects throughput keeps Celery's default, so the "best on 2 cores" run
(``-P prefork -c 2``) uses ``worker_prefetch_multiplier = 4``, ``task_acks_late = False``,
JSON serialisation, gossip, mingle and heartbeat on. Tried by hand on 20,000 no-ops, none of
``-P threads -c 4``, ``--prefetch-multiplier 64`` or ``--without-gossip --without-mingle
--without-heartbeat`` drained faster (all about 1,000 tasks/s, like ``-P solo``).
"""

import os

from celery import Celery

from bench.apps import stamps

url = os.environ["BENCH_REDIS_URL"]
app = Celery("bench_celery", broker=url, backend=url)
app.conf.broker_connection_retry_on_startup = True


@app.task(ignore_result=True)
def noop():
    return None


@app.task
def noop_result():
    return None


# canvas benchmark (bench/canvas.py): chord members and body, chain links
@app.task
def add(x, y):
    return x + y


@app.task
def tsum(numbers):
    return sum(numbers)


# suite (bench/suite.py): drain sentinel, ETA lateness, beat precision tick
@app.task(name="bench.done", ignore_result=True)
def done():
    stamps.done()


@app.task(name="bench.late", ignore_result=True)
def late(eta):
    stamps.late(eta)


@app.task(name="bench.tick", ignore_result=True)
def tick():
    stamps.tick()
