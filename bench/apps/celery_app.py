"""Celery peer app for the benchmark: default settings, broker and backend on BENCH_REDIS_URL.

Settings that differ from Celery's defaults: only ``broker_connection_retry_on_startup``
(set to its current default explicitly, to silence the deprecation warning).
Everything that affects throughput keeps Celery's default, notably
``worker_prefetch_multiplier = 4``, ``task_acks_late = False`` and JSON serialisation.
"""

import os

from celery import Celery

url = os.environ["BENCH_REDIS_URL"]
app = Celery("bench_celery", broker=url, backend=url)
app.conf.broker_connection_retry_on_startup = True


@app.task(ignore_result=True)
def noop():
    return None


@app.task
def noop_result():
    return None
