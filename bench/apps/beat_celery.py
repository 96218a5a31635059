"""Celery app for the beat benchmark (bench/beat.py), for both Celery beat's default
PersistentScheduler and celery-redbeat's RedBeatScheduler (chosen with `celery beat -S`).

Broker on BENCH_REDIS_URL (redbeat keeps its state there too: redbeat_redis_url defaults to
the broker URL). The schedule is the one of bench/apps/beat_beatq.py:

    tick                            bench.noop every 1 s, to queue "tick" (unless BENCH_BEAT_TICK=0)
                                    (bench.tick, which records when it runs, with
                                    BENCH_TICK_TASK=bench.tick: the suite's precision phase)
    bulk-00000 ... (BENCH_BEAT_N)   bench.noop every minute, crontab(minute="*"), to the
                                    default queue "celery"

Celery's interval schedules count from each entry's last run, not on a grid: the tick runs
1 s after its previous run. For the bulk entries that would make them fall due 60 s after the
beat created each one (spread over the seconds it takes to create 100,000), so they use
crontab(minute="*"): due together at each whole minute, the instants of beatq's `every 60s`.
BENCH_BEAT_BULK=interval gives them timedelta(seconds=60) instead.

Settings that differ from Celery's defaults: ``broker_connection_retry_on_startup`` (its current
default, set to silence the deprecation warning) and, only when the benchmark sets these
variables (the "tuned" redbeat failover run):

    BENCH_BEAT_MAX_LOOP         -> beat_max_loop_interval (default 0, i.e. 300 s)
    BENCH_REDBEAT_LOCK_TIMEOUT  -> redbeat_lock_timeout (default 5 x max loop interval = 1500 s)
"""

import os
from datetime import timedelta

from celery import Celery
from celery.schedules import crontab

from bench.apps import stamps

app = Celery("bench_beat_celery", broker=os.environ["BENCH_REDIS_URL"])
app.conf.broker_connection_retry_on_startup = True
if os.environ.get("BENCH_BEAT_MAX_LOOP"):
    app.conf.beat_max_loop_interval = float(os.environ["BENCH_BEAT_MAX_LOOP"])
if os.environ.get("BENCH_REDBEAT_LOCK_TIMEOUT"):
    app.conf.redbeat_lock_timeout = int(os.environ["BENCH_REDBEAT_LOCK_TIMEOUT"])


@app.task(name="bench.noop", ignore_result=True)
def noop():
    return None


@app.task(name="bench.tick", ignore_result=True)
def tick():
    stamps.tick()


schedule = {}
if os.environ.get("BENCH_BEAT_TICK", "1") == "1":
    schedule["tick"] = {
        "task": os.environ.get("BENCH_TICK_TASK", "bench.noop"),
        "schedule": timedelta(seconds=1),
        "options": {"queue": "tick"},
    }
every_minute = (
    timedelta(seconds=60)
    if os.environ.get("BENCH_BEAT_BULK") == "interval"
    else crontab(minute="*")
)
for i in range(int(os.environ.get("BENCH_BEAT_N", "0"))):
    schedule[f"bulk-{i:06d}"] = {"task": "bench.noop", "schedule": every_minute}
app.conf.beat_schedule = schedule
